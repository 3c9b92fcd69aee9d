%% @doc Lifecycle: the NIF loaded, unloaded and reloaded in a running VM;
%% the plugin started while PostgreSQL is down and catching up once it is
%% up; PostgreSQL restarted mid-stream; the queue limit.
-module(vmq_pgevents_40_lifecycle_tests).
-include_lib("eunit/include/eunit.hrl").

-define(S, {"", <<"life">>}).

publish(N) ->
    [ok = vmq_pgevents:on_publish(<<"u">>, ?S, 0, [<<"n">>], integer_to_binary(I), false)
     || I <- lists:seq(1, N)],
    ok.

%% the rows of hooks' events (not the plugin's own: pgevents_start, ...)
count(Table) ->
    list_to_integer(string:trim(pgev_pg:sql("SELECT count(*) FROM " ++ Table ++
                                            " WHERE hook NOT LIKE 'pgevents\\_%'"))).

reload_test_() ->
    {timeout, 120, fun() ->
        T = "life_reload",
        pgev_pg:sql("DROP TABLE IF EXISTS " ++ T ++ " CASCADE"),
        Round = fun() ->
                        pgev_app:start(T),
                        publish(10),
                        pgev_app:flush(),
                        pgev_app:stop()
                end,
        Round(),
        %% unload: delete + purge runs the NIF's unload: the state goes
        true = code:delete(vmq_pgevents_nif),
        true = code:purge(vmq_pgevents_nif) orelse true,
        {module, _} = code:load_file(vmq_pgevents_nif),
        Round(),
        %% reload over a loaded NIF (the upgrade path), then purge the old
        %% one: the new code adopts the state, sequence and incarnation
        {module, _} = code:load_file(vmq_pgevents_nif),
        code:purge(vmq_pgevents_nif),
        Round(),
        Rows = pgev_app:rows(T),
        ?assertEqual(30, length(Rows)),
        ByInc = lists:foldl(fun(R, M) ->
                                    maps:update_with(maps:get(<<"incarnation">>, R),
                                                     fun(L) -> L ++ [maps:get(<<"seq">>, R)] end,
                                                     [maps:get(<<"seq">>, R)], M)
                            end, #{}, Rows),
        ?assertEqual(2, map_size(ByInc)),
        %% the first round may share its incarnation with earlier tests
        [_, Inc2] = lists:sort(maps:keys(ByInc)),
        ?assertEqual(20, length(maps:get(Inc2, ByInc))),
        %% after the unload: two starts of one incarnation, numbered on from
        %% 1 without a gap: start, 10 events, stop, start, 10 events, stop
        ?assertEqual([{1, <<"pgevents_start">>}, {12, <<"pgevents_stop">>},
                      {13, <<"pgevents_start">>}, {24, <<"pgevents_stop">>}],
                     [{maps:get(<<"seq">>, R), maps:get(<<"hook">>, R)} || R <- pgev_app:plugin_rows(T),
                                                                      maps:get(<<"incarnation">>, R) =:= Inc2]),
        ?assertEqual(24, pgev_pg:scalar("SELECT count(*) FROM " ++ T ++ " WHERE incarnation = " ++
                                        integer_to_list(Inc2) ++ " AND seq BETWEEN 1 AND 24"))
    end}.

%% What VerneMQ's plugin manager does (vmq_plugin_mgr:start_plugin/1, 2.1
%% and 2.2): start the application, then code:load_file/1 every module of
%% it. Recording goes on with the same writer: nothing lost, nothing
%% twice, one writer thread; the same after the old code is purged.
plugin_manager_reload_test_() ->
    {timeout, 120, fun() ->
        pgev_app:with_plugin("life_mgr_reload", [], fun() ->
            {ok, Mods} = application:get_key(vmq_pgevents, modules),
            publish(100),
            [{module, M} = code:load_file(M) || M <- Mods],
            ?assert(erlang:check_old_code(vmq_pgevents_nif)),
            publish(100),
            pgev_app:flush(),
            ?assertEqual(1, writer_threads()),
            [code:purge(M) || M <- Mods],
            ?assertNot(erlang:check_old_code(vmq_pgevents_nif)),
            publish(100),
            pgev_app:flush(),
            #{written := Written, state := connected, dropped := 0} = vmq_pgevents:status(),
            Rows = pgev_app:rows("life_mgr_reload"),
            ?assertEqual(300, length(Rows)),
            [Inc] = lists:usort([maps:get(<<"incarnation">>, R) || R <- Rows]),
            ?assert(is_integer(Inc)),
            Seqs = [maps:get(<<"seq">>, R) || R <- Rows],
            ?assertEqual(lists:seq(hd(Seqs), hd(Seqs) + 299), Seqs),
            ?assert(Written >= 300),
            ?assertEqual(1, writer_threads())
        end)
    end}.

%% A NIF library of another build cannot share the running state: its
%% load is refused and the running code stays in use.
other_build_refused_test_() ->
    {timeout, 60, fun() ->
        Other = "_build/make/other_build",
        ?assert(filelib:is_regular(Other ++ "/priv/vmq_pgevents_nif.so")),
        ok = filelib:ensure_dir(Other ++ "/ebin/x"),
        {ok, _} = file:copy(code:which(vmq_pgevents_nif), Other ++ "/ebin/vmq_pgevents_nif.beam"),
        pgev_app:with_plugin("life_other_build", [], fun() ->
            publish(10),
            Before = code:which(vmq_pgevents_nif),
            true = code:add_patha(filename:absname(Other ++ "/ebin")),
            Reload = code:load_file(vmq_pgevents_nif),
            true = code:del_path(filename:absname(Other ++ "/ebin")),
            ?assertEqual({error, on_load_failure}, Reload),
            ?assertEqual(Before, code:which(vmq_pgevents_nif)),
            publish(10),
            pgev_app:flush(),
            ?assertEqual(20, length(pgev_app:rows("life_other_build")))
        end)
    end}.

%% A library that is not this module's NIF (here crypto's; a build for
%% another Erlang/OTP fails alike, bad_lib): the plugin starts all the
%% same, in a VM of its own, records nothing and says why. (The module
%% left unloaded failed the application's start: VerneMQ down with it.)
not_our_library_test_() ->
    {timeout, 60, fun() ->
        Dir = filename:absname("_build/make/not_our_library"),
        ok = filelib:ensure_dir(Dir ++ "/ebin/x"),
        ok = filelib:ensure_dir(Dir ++ "/priv/x"),
        [{ok, _} = file:copy(B, filename:join(Dir ++ "/ebin", filename:basename(B)))
         || B <- filelib:wildcard(filename:dirname(code:which(vmq_pgevents)) ++ "/vmq_pgevents*")],
        [Crypto | _] = filelib:wildcard(code:priv_dir(crypto) ++ "/lib/crypto.so"),
        {ok, _} = file:copy(Crypto, Dir ++ "/priv/vmq_pgevents_nif.so"),
        Out = os:cmd(os:find_executable("erl") ++ " -noshell -pa " ++ Dir ++ "/ebin -eval '"
                     "R = application:ensure_all_started(vmq_pgevents), "
                     "S = vmq_pgevents:status(), "
                     "io:format(\"result ~p~nlast_error ~s~n\", [{R, maps:get(state, S)}, maps:get(last_error, S)]), "
                     "halt().' 2>/dev/null"),
        ?assertEqual(["result {{ok,[vmq_pgevents]},not_recording}"],
                     [L || L <- string:split(Out, "\n", all), lists:prefix("result ", L)]),
        ?assertMatch({match, _}, re:run(Out, "^last_error the NIF library cannot load: bad_lib: .*crypto.*docs/install.md",
                                        [multiline]))
    end}.

%% A value the plugin cannot use (as advanced.config can set, unchecked by
%% the schema) does not fail the start: that would take VerneMQ down. The
%% plugin records nothing and says why.
bad_value_does_not_fail_start_test_() ->
    {timeout, 60, fun() ->
        pgev_app:with_plugin("life_bad_value", [{batch_size, 0}], fun() ->
            S = vmq_pgevents:status(),
            ?assertEqual(not_recording, maps:get(state, S)),
            ?assertMatch(<<"bad configuration: batch_size", _/binary>>, maps:get(last_error, S)),
            ?assertEqual(next, vmq_pgevents:auth_on_register({{127, 0, 0, 1}, 1}, ?S, <<"u">>, <<"pw">>, true)),
            publish(10),
            ?assertMatch(#{queued := 0}, vmq_pgevents:status()),
            ?assertEqual(maps:get(last_seq, S), maps:get(last_seq, vmq_pgevents:status()))
        end),
        ?assertEqual(stopped, maps:get(state, vmq_pgevents:status()))
    end}.

%% A stop_timeout_ms past what the NIF's stop takes (advanced.config; the
%% schema refuses it): refused at start, naming the key, as any bad value.
%% It was taken, and the stop raised badarg, leaving the writer running.
stop_timeout_too_large_test_() ->
    {timeout, 60, fun() ->
        pgev_app:with_plugin("life_stop_timeout", [{stop_timeout_ms, 1 bsl 31}], fun() ->
            S = vmq_pgevents:status(),
            ?assertEqual(not_recording, maps:get(state, S)),
            ?assertEqual(<<"bad configuration: stop_timeout_ms: must be at most 3600000">>, maps:get(last_error, S))
        end)
    end}.

%% A spool directory that cannot be made: the plugin records all the same
%% (events wait in memory), and status says why there is no journal.
unusable_spool_dir_test_() ->
    {timeout, 60, fun() ->
        pgev_app:with_plugin("life_no_spool", [{spool_dir, "/dev/null/spool"}], fun() ->
            publish(10),
            pgev_app:flush(),
            ?assertEqual(10, length(pgev_app:rows("life_no_spool"))),
            ?assertMatch(#{state := connected, journal := false,
                           spool_error := <<"cannot make spool directory /dev/null/spool: Not a directory">>},
                         vmq_pgevents:status())
        end)
    end}.

%% threads of this VM named vmq_pgevents (the writer)
writer_threads() ->
    length([T || T <- filelib:wildcard("/proc/self/task/*/comm"),
                 {ok, <<"vmq_pgevents\n">>} =:= file:read_file(T)]).

postgres_down_at_start_test_() ->
    {timeout, 120, fun() ->
        T = "life_down_at_start",
        pgev_pg:sql("DROP TABLE IF EXISTS " ++ T ++ " CASCADE"),
        pgev_pg:stop(),
        try
            pgev_app:start(T),
            publish(500),
            %% the writer tried, failed and said why
            pgev_app:wait_for(disconnected_with_an_error, fun() ->
                case vmq_pgevents:status() of
                    #{state := disconnected, last_error := E} -> E =/= <<>>;
                    _ -> false
                end
            end),
            %% (and the start's pgevents_start row)
            #{state := disconnected, pending := 501, last_error := Err} =
                vmq_pgevents:status(),
            ?assertNotEqual(<<>>, Err),
            pgev_pg:start(),
            pgev_app:flush(),
            ?assertEqual(500, count(T)),
            #{state := connected, dropped := 0} = vmq_pgevents:status()
        after
            pgev_pg:start(),
            pgev_app:stop()
        end
    end}.

%% With a backlog the writer takes the next batch from the queue and
%% encodes it while PostgreSQL commits the one before (status prefetched):
%% every event must still land once, in its place, with its own payload;
%% a row PostgreSQL refuses in a batch that has the next one joined to it
%% is isolated the same way.
pipelined_batches_test_() ->
    {timeout, 120, fun() ->
        T = "life_pipelined",
        pgev_pg:sql("DROP TABLE IF EXISTS " ++ T ++ ", " ++ T ++ "_dead CASCADE"),
        pgev_app:start(T, [{batch_size, 500}, {journal, false}, {queue_max_events, 1000000}]),
        try
            publish(1),
            pgev_app:flush(),    %% the table is there
            pgev_pg:sql("ALTER TABLE " ++ T ++ " ADD CHECK (payload IS DISTINCT FROM "
                        "'\\x3330303030'::bytea)"),   %% refuses the payload "30000"
            #{last_seq := First0, prefetched := P0, dead_lettered := D0} = vmq_pgevents:status(),
            N = 60000,
            pgev_pg:stop(),      %% a backlog: a full batch waits at every commit
            publish(N),          %% payloads "1".."N" from one process: seq order
            pgev_pg:start(),
            pgev_app:flush(),
            #{prefetched := P1, batches := Batches, dropped := 0, dead_lettered := D1,
              dead_letter_lost := 0, spooled := 0} = vmq_pgevents:status(),
            ?assertEqual(N, count(T)),   %% the first one + N - 1
            ?assertEqual([#{<<"min">> => First0 + 1, <<"max">> => First0 + N, <<"rows">> => N - 1,
                            <<"seqs">> => N - 1, <<"wrong_payload">> => 0}],
                         pgev_pg:rows("SELECT min(seq), max(seq), count(*) AS rows, "
                                      "count(DISTINCT seq) AS seqs, "
                                      "count(*) FILTER (WHERE payload IS DISTINCT FROM "
                                      "convert_to((seq - " ++ integer_to_list(First0) ++
                                      ")::text, 'UTF8')) AS wrong_payload FROM " ++ T ++
                                      " WHERE seq > " ++ integer_to_list(First0))),
            ?assertEqual(1, D1 - D0),
            ?assertEqual([#{<<"seq">> => First0 + 30000}],
                         pgev_pg:rows("SELECT seq FROM " ++ T ++ "_dead")),
            ?assert(Batches >= N div 500),
            ?assert(P1 - P0 >= N div 500 - 2)
        after
            pgev_pg:start(),
            pgev_app:stop()
        end
    end}.

%% PostgreSQL stopped and started again, then killed -9 and started again,
%% each while a stream of 20,000 events runs: the publisher itself brings
%% each fault at a point of its stream (the kill when half the events were
%% sent, on a connected writer), so every fault lands while events are
%% still coming. Every event once, in order: seq ascending in the order of
%% the calls (payload K is the K-th call), without a gap.
postgres_restart_midstream_test_() ->
    {timeout, 180, fun() ->
        T = "life_restart",
        pgev_pg:sql("DROP TABLE IF EXISTS " ++ T ++ " CASCADE"),
        pgev_app:start(T, [{batch_size, 200}]),
        try
            publish(1),
            pgev_app:flush(),    %% the table is there
            %% the NIF's counters, so far (they live as long as the VM)
            #{dead_lettered := D0, dropped := Dr0, reconnects := R0, last_seq := First0} =
                vmq_pgevents:status(),
            Self = self(),
            N = 20000,
            Faults = #{5000 => fun pgev_pg:stop/0,
                       7000 => fun() -> wait_state_not(connected), pgev_pg:start(),
                                        wait_state_is(connected) end,
                       N div 2 => fun pgev_pg:kill/0,
                       13000 => fun pgev_pg:start/0},
            Pub = spawn_link(fun() ->
                                     [begin
                                          Sent = (B - 1) * 100,
                                          case maps:find(Sent, Faults) of
                                              {ok, F} -> F(), Self ! {fault_at, Sent};
                                              error -> ok
                                          end,
                                          [ok = vmq_pgevents:on_publish(<<"u">>, ?S, 0, [<<"n">>],
                                                                        integer_to_binary(Sent + I), false)
                                           || I <- lists:seq(1, 100)],
                                          timer:sleep(2)
                                      end || B <- lists:seq(1, N div 100)],
                                     Self ! published
                             end),
            receive published -> ok after 120000 -> error({publisher_stuck, Pub}) end,
            ?assertEqual([5000, 7000, 10000, 13000],
                         lists:sort([receive {fault_at, At} -> At after 0 -> none end
                                     || _ <- lists:seq(1, 4)])),
            pgev_app:flush(),
            %% every event exactly once, in order
            ?assertEqual(N, count(T) - 1),
            ?assertEqual([#{<<"min">> => First0 + 1, <<"max">> => First0 + N, <<"rows">> => N,
                            <<"seqs">> => N, <<"out_of_order">> => 0}],
                         pgev_pg:rows("SELECT min(seq), max(seq), count(*) AS rows, "
                                      "count(DISTINCT seq) AS seqs, "
                                      "count(*) FILTER (WHERE payload IS DISTINCT FROM "
                                      "convert_to((seq - " ++ integer_to_list(First0) ++
                                      ")::text, 'UTF8')) AS out_of_order FROM " ++ T ++
                                      " WHERE seq > " ++ integer_to_list(First0))),
            #{dropped := Dr0, dead_lettered := D0, reconnects := R1} = vmq_pgevents:status(),
            %% one reconnect after the stop, one after the kill
            ?assert(R1 - R0 >= 2)
        after
            pgev_pg:start(),
            pgev_app:stop()
        end
    end}.

wait_state_is(State) ->
    pgev_app:wait_for({writer_state, State},
                      fun() -> maps:get(state, vmq_pgevents:status()) =:= State end).

wait_state_not(State) ->
    pgev_app:wait_for({writer_state_not, State},
                      fun() -> maps:get(state, vmq_pgevents:status()) =/= State end).

%% The queue limit, with drops in the middle of a run: 250 events while
%% PostgreSQL is down (the queue takes 100, the writer may hold one batch
%% in hand, the rest is dropped), then PostgreSQL back and 50 more. The
%% drops are counted per hook and reported once by the writer; every kept
%% event is written, and each drop leaves a gap in seq: every row's seq is
%% its place in the run (its payload), 250 - Dropped of the first 250 and
%% all of the last 50 are there.
queue_limit_test_() ->
    {timeout, 120, fun() ->
        T = "life_queue_limit",
        pgev_pg:sql("DROP TABLE IF EXISTS " ++ T ++ " CASCADE"),
        pgev_pg:stop(),
        try
            %% the journal off: events wait in memory only
            pgev_app:start(T, [{queue_max_events, 100}, {batch_size, 50}, {journal, false}]),
            pgev_app:capture_logs(),
            #{dropped := Dr0, last_seq := L0, per_hook := #{on_publish := #{dropped := H0}}} =
                vmq_pgevents:status(),
            publish_range(1, 250),
            #{dropped := Dr1, per_hook := #{on_publish := #{dropped := H1}}} = vmq_pgevents:status(),
            Dropped = Dr1 - Dr0,
            %% the writer may hold one batch in hand, the queue the rest
            ?assert(Dropped >= 101 andalso Dropped =< 151),   %% (the queue holds the start row too)
            ?assertEqual(Dropped, H1 - H0),
            %% the hook path only counts; the writer reports the drops (at
            %% its next turn, PostgreSQL up or not: checked below, once)
            pgev_pg:start(),
            pgev_app:flush(),
            publish_range(251, 300),     %% after the drops
            pgev_app:flush(),
            %% reported with their number: once, or (when the writer's turn
            %% came while they were being dropped) what it saw then and
            %% the rest 10 s later
            Reported = fun() ->
                               lists:sum([binary_to_integer(N) || L <- pgev_app:logs_so_far(),
                                          {match, [N]} <- [re:run(L, "([0-9]+) events dropped: the in-memory queue was full",
                                                                  [{capture, all_but_first, binary}])]])
                       end,
            wait_until(fun() -> Reported() >= Dropped end),
            ?assertEqual(Dropped, Reported()),
            #{dropped := Dr1} = vmq_pgevents:status(),
            ?assertEqual([], filelib:wildcard(filename:join(pgev_app:spool_dir(T), "*.dat"))),
            %% every row's seq is its place in the run (a dropped call uses
            %% up its seq too): the rows are the calls not dropped, each
            %% once; all 50 after the drops; the missing ones as many as
            %% were dropped (which ones: when the writer took a batch)
            %% (the writer's pgevents_dropped row, once there was room
            %% again, took a number too: the hooks' rows after it are one on)
            DropRows = fun() -> [R || R <- pgev_app:plugin_rows(T),
                                      maps:get(<<"hook">>, R) =:= <<"pgevents_dropped">>] end,
            pgev_app:wait_for(drop_row, fun() -> pgev_app:flush(), DropRows() =/= [] end),
            [#{<<"seq">> := DSeq, <<"extra">> := DExtra}] = DropRows(),
            ?assertMatch(#{<<"dropped">> := Dropped, <<"reasons">> := #{<<"no_room">> := Dropped},
                           <<"hooks">> := #{<<"on_publish">> := Dropped}}, DExtra),
            Rows = [list_to_tuple(string:lexemes(R, "|")) || R <- string:lexemes(pgev_pg:sql(
                "SELECT (seq - " ++ integer_to_list(L0) ++ " - (seq > " ++ integer_to_list(DSeq) ++
                ")::int) || '|' || convert_from(payload, 'UTF8') FROM "
                ++ T ++ " WHERE hook = 'on_publish' ORDER BY seq"), "\n")],
            ?assertEqual([], [R || {S, P} = R <- Rows, S =/= P]),
            Seqs = [list_to_integer(S) || {S, _} <- Rows],
            ?assertEqual(Seqs, lists:usort(Seqs)),
            ?assertEqual(lists:seq(251, 300), [S || S <- Seqs, S > 250]),
            ?assertEqual(250 - Dropped, length([S || S <- Seqs, S =< 250])),
            %% the drops' range holds every number missing, and the record
            %% says so: missing = the drops, each range dropped for no room
            #{<<"first_seq">> := DFirst, <<"last_seq">> := DLast} = DExtra,
            ?assert(DFirst > L0 andalso DLast =< L0 + 250),
            [#{<<"missing">> := Missing, <<"missing_ranges">> := Ranges}] =
                pgev_pg:rows("SELECT missing, missing_ranges FROM " ++ T ++ "_completeness((SELECT min(ts) FROM "
                             ++ T ++ "))"),
            ?assertEqual(Dropped, Missing),
            ?assertEqual(Dropped, lists:sum([C || #{<<"count">> := C} <- Ranges])),
            ?assertEqual([<<"dropped: no_room">>], lists:usort([W || #{<<"why">> := W} <- Ranges])),
            ?assert(lists:all(fun(S) -> S >= 1 end, Seqs))
        after
            _ = pgev_app:captured_logs(),
            pgev_pg:start(),
            pgev_app:stop()
        end
    end}.

%% An event larger than a journal segment takes (a payload kept whole,
%% payload_mode full): dropped for its size, not for want of room. Counted
%% in dropped, not in journal_no_room; logged as too large; the drop row
%% and the completeness function say too_large; the events around it are
%% written.
too_large_test_() ->
    {timeout, 120, fun() ->
        T = "life_too_large",
        pgev_pg:sql("DROP TABLE IF EXISTS " ++ T ++ " CASCADE"),
        %% the journal in memory: segments of an eighth of queue_max_bytes (1 MiB)
        pgev_app:start(T, [{payload_mode, "full"}, {journal, false}, {queue_max_bytes, 8388608}]),
        pgev_app:capture_logs(),
        try
            #{dropped := Dr0, journal_no_room := N0, last_seq := L0} = vmq_pgevents:status(),
            Pub = fun(P) -> ok = vmq_pgevents:on_publish(<<"u">>, ?S, 0, [<<"big">>], P, false) end,
            Pub(<<"before">>),
            %% larger than the queue's limit too: still too large, not "full"
            Pub(binary:copy(<<"x">>, 9 * 1024 * 1024)),
            Pub(<<"after">>),
            pgev_app:flush(),
            #{dropped := Dr1, journal_no_room := N1} = vmq_pgevents:status(),
            ?assertEqual({1, 0}, {Dr1 - Dr0, N1 - N0}),
            ?assertEqual("before after", string:trim(pgev_pg:sql(
                "SELECT string_agg(convert_from(payload, 'UTF8'), ' ' ORDER BY seq) FROM " ++ T ++
                " WHERE hook = 'on_publish'"))),
            pgev_app:wait_for(logged, fun() ->
                [] =/= [L || L <- pgev_app:logs_so_far(),
                             binary:match(L, <<"1 events dropped: each larger than a journal segment takes (1048576 bytes">>) =/= nomatch]
            end),
            ?assertEqual([], [L || L <- pgev_app:logs_so_far(), binary:match(L, <<"queue was full">>) =/= nomatch]),
            DropRows = fun() -> [R || R <- pgev_app:plugin_rows(T),
                                      maps:get(<<"hook">>, R) =:= <<"pgevents_dropped">>] end,
            pgev_app:wait_for(drop_row, fun() -> pgev_app:flush(), DropRows() =/= [] end),
            [#{<<"extra">> := Extra}] = DropRows(),
            ?assertMatch(#{<<"dropped">> := 1, <<"reasons">> := #{<<"too_large">> := 1},
                           <<"first_seq">> := S, <<"last_seq">> := S} when S =:= L0 + 2, Extra),
            [#{<<"missing">> := 1, <<"missing_ranges">> := [#{<<"why">> := <<"dropped: too_large">>}]}] =
                pgev_pg:rows("SELECT missing, missing_ranges FROM " ++ T ++ "_completeness((SELECT min(ts) FROM "
                             ++ T ++ "))")
        after
            _ = pgev_app:captured_logs(),
            pgev_app:stop()
        end
    end}.

%% on_publish of payloads "From".."To", in order, from this process
publish_range(From, To) ->
    [ok = vmq_pgevents:on_publish(<<"u">>, ?S, 0, [<<"n">>], integer_to_binary(I), false)
     || I <- lists:seq(From, To)],
    ok.

%% An outage is logged once when it starts and once when it ends, however
%% many reconnect attempts it takes.
outage_logged_once_test_() ->
    {timeout, 120, fun() ->
        T = "life_outage_log",
        pgev_pg:sql("DROP TABLE IF EXISTS " ++ T ++ " CASCADE"),
        pgev_pg:stop(),
        pgev_app:capture_logs(),
        try
            #{write_errors := E0} = vmq_pgevents:status(),   %% the NIF's, so far
            pgev_app:start(T),
            publish(10),
            %% backoff 20..200 ms: several attempts, each one a write error
            pgev_app:wait_for(four_failed_attempts, fun() ->
                maps:get(write_errors, vmq_pgevents:status()) - E0 >= 4
            end),
            pgev_pg:start(),
            pgev_app:flush(),
            ?assertEqual(10, count(T)),
            Logs = pgev_app:captured_logs(),
            Down = [L || L <- Logs, binary:match(L, <<"postgresql unavailable">>) =/= nomatch],
            Up = [L || L <- Logs, binary:match(L, <<"postgresql available again">>) =/= nomatch],
            ?assertEqual({1, 1}, {length(Down), length(Up)})
        after
            _ = pgev_app:captured_logs(),
            pgev_pg:start(),
            pgev_app:stop()
        end
    end}.

%% A row PostgreSQL refuses (a CHECK constraint a DBA added) is isolated,
%% counted and kept in <table>_dead with the error; the rest of its batch is
%% written.
poisoned_row_test_() ->
    {timeout, 120, fun() ->
        T = "life_poison",
        pgev_pg:sql("DROP TABLE IF EXISTS " ++ T ++ ", " ++ T ++ "_dead CASCADE"),
        pgev_app:start(T, [{batch_size, 1000}, {flush_interval_ms, 500}]),
        pgev_app:capture_logs(),
        try
            publish(1),
            pgev_app:flush(),
            pgev_pg:sql("ALTER TABLE " ++ T ++ " ADD CHECK (topic IS DISTINCT FROM 'zz-refused')"),
            #{dead_lettered := D0} = vmq_pgevents:status(),
            [ok = vmq_pgevents:on_publish(<<"u">>, ?S, 0, [topic(I)], <<"x">>, false)
             || I <- lists:seq(1, 100)],
            pgev_app:flush(),
            ?assertEqual(100, count(T)),   %% 1 before + 99
            ?assertEqual("0", string:trim(pgev_pg:sql(
                "SELECT count(*) FROM " ++ T ++ " WHERE topic = 'zz-refused'"))),
            #{dead_lettered := D1, dead_letter_lost := 0} = vmq_pgevents:status(),
            ?assertEqual(1, D1 - D0),
            [Dead] = pgev_pg:rows("SELECT topic, hook, seq, dead_sqlstate, dead_error FROM " ++ T ++ "_dead"),
            ?assertMatch(#{<<"topic">> := <<"zz-refused">>, <<"hook">> := <<"on_publish">>,
                           <<"dead_sqlstate">> := <<"23514">>}, Dead),
            ?assertNotEqual(nomatch, binary:match(maps:get(<<"dead_error">>, Dead),
                                                  <<"violates check constraint">>)),
            %% logged with its seq and the error, never the row's values
            [Line] = [L || L <- pgev_app:captured_logs(),
                           binary:match(L, <<"refused the row">>) =/= nomatch],
            ?assertNotEqual(nomatch, binary:match(Line, <<"violates check constraint">>)),
            ?assertEqual(nomatch, binary:match(Line, <<"zz-refused">>))
        after
            _ = pgev_app:captured_logs(),
            pgev_app:stop()
        end
    end}.

%% 200 rows in a row, each refused for its data: each is isolated and
%% dead-lettered at the cost of about one COPY, not of the whole rest of
%% the batch each time. The COPY statements into the table are counted by
%% a statement trigger with a sequence (not rolled back with them).
refused_rows_cost_test_() ->
    {timeout, 120, fun() ->
        T = "life_refused_run",
        pgev_pg:sql("DROP TABLE IF EXISTS " ++ T ++ ", " ++ T ++ "_dead CASCADE"),
        pgev_app:start(T, [{batch_size, 1000}, {flush_interval_ms, 500}]),
        try
            publish(1),
            pgev_app:flush(),
            pgev_pg:sql("ALTER TABLE " ++ T ++ " ADD CHECK (topic IS DISTINCT FROM 'zz-refused')"),
            pgev_pg:sql("CREATE SEQUENCE " ++ T ++ "_copies"),
            pgev_pg:sql("CREATE FUNCTION " ++ T ++ "_count() RETURNS trigger LANGUAGE plpgsql AS $$ "
                        "BEGIN PERFORM nextval('" ++ T ++ "_copies'); RETURN NULL; END $$"),
            pgev_pg:sql("CREATE TRIGGER count_copies BEFORE INSERT ON " ++ T ++
                        " FOR EACH STATEMENT EXECUTE FUNCTION " ++ T ++ "_count()"),
            [ok = vmq_pgevents:on_publish(<<"u">>, ?S, 0, [<<"zz-refused">>], integer_to_binary(I), false)
             || I <- lists:seq(1, 200)],
            pgev_app:flush(),
            ?assertEqual(200, count(T ++ "_dead")),
            Copies = list_to_integer(string:trim(pgev_pg:sql("SELECT last_value FROM " ++ T ++ "_copies"))),
            %% about 8 to isolate the first, 8 the second, then one each (215; it was 1,354)
            ?assert(Copies >= 200 andalso Copies =< 300)
        after
            pgev_app:stop(),
            pgev_pg:sql("DROP FUNCTION IF EXISTS " ++ T ++ "_count() CASCADE"),
            pgev_pg:sql("DROP SEQUENCE IF EXISTS " ++ T ++ "_copies")
        end
    end}.

topic(37) -> <<"zz-refused">>;
topic(_) -> <<"fine">>.

%% ---- errors that may be a row's or the table's ------------------------------------

%% A DBA's trigger that raises (P0001) for some rows: not a data error
%% class, yet the error repeats on the same rows. The rows are isolated and
%% dead-lettered (the table takes the others), the rest written.
raising_trigger_test_() ->
    {timeout, 120, fun() ->
        T = "life_raise",
        with_raise_trigger(T, "NEW.topic = 'zz-refused'", fun() ->
            #{dead_lettered := D0, dead_letter_lost := L0} = vmq_pgevents:status(),
            [ok = vmq_pgevents:on_publish(<<"u">>, ?S, 0, [topic(I)], integer_to_binary(I), false)
             || I <- lists:seq(1, 100)],
            pgev_app:flush(),
            ?assertEqual(99, count(T)),
            ?assertEqual("0", string:trim(pgev_pg:sql("SELECT count(*) FROM " ++ T ++ " WHERE topic = 'zz-refused'"))),
            [Dead] = pgev_pg:rows("SELECT topic, dead_sqlstate, dead_error FROM " ++ T ++ "_dead"),
            ?assertMatch(#{<<"topic">> := <<"zz-refused">>, <<"dead_sqlstate">> := <<"P0001">>,
                           <<"dead_error">> := <<"refused by the DBA's trigger (SQLSTATE P0001)">>}, Dead),
            #{dead_lettered := D1, dead_letter_lost := L1} = vmq_pgevents:status(),
            ?assertEqual({1, 0}, {D1 - D0, L1 - L0})
        end)
    end}.

%% Most of a batch refused by the trigger, from its first row to its last
%% (one topic flooding): the rows after a refused one, and the last, are
%% refused the same way, yet the table takes rows of other topics, so each
%% refused row is the row's own: 81 dead-lettered, the other 19 written,
%% nothing waits.
raising_for_most_test_() ->
    {timeout, 120, fun() ->
        T = "life_raise_most",
        with_raise_trigger(T, "NEW.topic = 'zz-refused'", fun() ->
            #{dead_lettered := D0, dead_letter_lost := L0} = vmq_pgevents:status(),
            [ok = vmq_pgevents:on_publish(<<"u">>, ?S, 0, [case I =< 80 orelse I =:= 100 of
                                                               true -> <<"zz-refused">>;
                                                               false -> <<"fine">>
                                                           end], integer_to_binary(I), false)
             || I <- lists:seq(1, 100)],
            pgev_app:flush(),
            ?assertEqual(19, count(T)),
            ?assertEqual(81, count(T ++ "_dead")),
            #{dead_lettered := D1, dead_letter_lost := L1} = vmq_pgevents:status(),
            ?assertEqual({81, 0}, {D1 - D0, L1 - L0})
        end)
    end}.

%% A batch that is only one client's refused rows (a flood of them, nothing
%% else waiting): no row of another client or topic to try, so a copy of
%% the refused row without its topic and client id is tried (in a
%% transaction rolled back, never kept); the table takes it, so the error
%% is each row's own: all 30 dead-lettered, nothing waits, and the rows
%% after them are written.
raising_for_a_flood_test_() ->
    {timeout, 120, fun() ->
        T = "life_raise_flood",
        with_raise_trigger(T, "NEW.topic = 'zz-refused'", fun() ->
            #{dead_lettered := D0, dead_letter_lost := L0} = vmq_pgevents:status(),
            [ok = vmq_pgevents:on_publish(<<"u">>, ?S, 0, [<<"zz-refused">>], integer_to_binary(I), false)
             || I <- lists:seq(1, 30)],
            pgev_app:flush(),
            ?assertEqual(30, count(T ++ "_dead")),
            [ok = vmq_pgevents:on_publish(<<"u">>, ?S, 0, [<<"fine">>], integer_to_binary(I), false)
             || I <- lists:seq(1, 5)],
            pgev_app:flush(),
            ?assertEqual(5, count(T)),
            #{dead_lettered := D1, dead_letter_lost := L1} = vmq_pgevents:status(),
            ?assertEqual({30, 0}, {D1 - D0, L1 - L0})
        end)
    end}.

%% The same trigger raising for every row: the table's, not a row's. Nothing
%% is dead-lettered; the events wait (as in an outage) and are all written
%% once the trigger is gone.
%% Also for a trigger that refuses every row with a payload (as a broken
%% function over it would): the copy of the refused row tried last keeps
%% its payload, so it is refused too.
raising_for_all_test_() ->
    {timeout, 240, fun() ->
        raising_for_all("life_raise_all", "true"),
        raising_for_all("life_raise_payload", "NEW.payload IS NOT NULL")
    end}.

raising_for_all(T, When) ->
        with_raise_trigger(T, When, fun() ->
            #{dead_lettered := D0, write_errors := E0} = vmq_pgevents:status(),
            [ok = vmq_pgevents:on_publish(<<"u">>, ?S, 0, [<<"n">>], integer_to_binary(I), false)
             || I <- lists:seq(1, 50)],
            %% tried, refused, tried again
            wait_until(fun() -> maps:get(write_errors, vmq_pgevents:status()) >= E0 + 2 end),
            #{last_error := Err} = vmq_pgevents:status(),
            ?assertNotEqual(nomatch, binary:match(Err, <<"refused by the DBA's trigger">>)),
            pgev_pg:sql("DROP TRIGGER raise ON " ++ T),
            pgev_app:flush(),
            ?assertEqual([integer_to_list(I) || I <- lists:seq(1, 50)],
                         string:lexemes(pgev_pg:sql("SELECT convert_from(payload, 'UTF8') FROM " ++ T
                                                    ++ " ORDER BY seq"), "\n")),
            ?assertEqual(0, count(T ++ "_dead")),
            #{dead_lettered := D1} = vmq_pgevents:status(),
            ?assertEqual(0, D1 - D0)
        end).

%% A batch of the refused row alone, no other event waiting: a copy of it
%% without its topic and client id is tried (rolled back), the table takes
%% it, so the row is dead-lettered at once, and the next event written.
raising_alone_test_() ->
    {timeout, 120, fun() ->
        T = "life_raise_alone",
        with_raise_trigger(T, "NEW.topic = 'zz-refused'", fun() ->
            ok = vmq_pgevents:on_publish(<<"u">>, ?S, 0, [<<"zz-refused">>], <<"bad">>, false),
            pgev_app:flush(),
            ?assertEqual(1, count(T ++ "_dead")),
            ?assertEqual("0", string:trim(pgev_pg:sql("SELECT count(*) FROM " ++ T))),
            ok = vmq_pgevents:on_publish(<<"u">>, ?S, 0, [<<"fine">>], <<"good">>, false),
            pgev_app:flush(),
            ?assertEqual("good", string:trim(pgev_pg:sql("SELECT string_agg(convert_from(payload, 'UTF8'), ' ') FROM " ++ T))),
            ?assertEqual("bad", string:trim(pgev_pg:sql("SELECT string_agg(convert_from(payload, 'UTF8'), ' ') FROM " ++ T ++ "_dead")))
        end)
    end}.

with_raise_trigger(T, When, Fun) ->
    pgev_pg:sql("DROP TABLE IF EXISTS " ++ T ++ ", " ++ T ++ "_dead CASCADE"),
    pgev_app:start(T, [{batch_size, 1000}, {flush_interval_ms, 200}]),
    try
        ok = vmq_pgevents:on_client_gone({"", <<"first">>}),
        pgev_app:flush(),
        pgev_pg:sql("DELETE FROM " ++ T),
        pgev_pg:sql("CREATE FUNCTION " ++ T ++ "_raise() RETURNS trigger LANGUAGE plpgsql AS $$ "
                    "BEGIN IF " ++ When ++ " THEN RAISE EXCEPTION 'refused by the DBA''s trigger'; "
                    "END IF; RETURN NEW; END $$"),
        pgev_pg:sql("CREATE TRIGGER raise BEFORE INSERT ON " ++ T ++ " FOR EACH ROW EXECUTE FUNCTION "
                    ++ T ++ "_raise()"),
        Fun()
    after
        pgev_app:stop(),
        pgev_pg:sql("DROP FUNCTION IF EXISTS " ++ T ++ "_raise() CASCADE")
    end.

wait_until(F) -> wait_until(F, 300).
wait_until(F, 0) -> ?assert(F());
wait_until(F, N) ->
    case F() of
        true -> ok;
        false -> timer:sleep(100), wait_until(F, N - 1)
    end.

%% ---- the dead-letter table's write fails ------------------------------------------

%% The connection drops while a refused row is written into <table>_dead:
%% the row is kept for the next try and lands there once, not counted lost.
dead_letter_connection_dropped_test_() ->
    {timeout, 120, fun() ->
        dead_letter_fault("life_dead_drop", [], fun(T) ->
            %% the dead-letter COPY is held by its trigger: end its connection
            wait_until(fun() -> dead_copy_running(T) end),
            "t" = string:trim(pgev_pg:sql(
                "SELECT bool_and(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'vmq_pgevents' AND query LIKE 'COPY%" ++ T ++ "_dead%'"))
        end)
    end}.

%% The dead-letter COPY outlives pg_timeout_ms and commits after the writer
%% gave up on its answer: found there on the next try, counted kept once,
%% not written twice.
dead_letter_timed_out_test_() ->
    {timeout, 120, fun() ->
        dead_letter_fault("life_dead_late", [{pg_timeout_ms, 1000}], fun(_T) ->
            %% the dead-letter write outlived pg_timeout_ms: given up, reconnected
            #{reconnects := R0} = vmq_pgevents:status(),
            pgev_app:wait_for(writer_timed_out_and_reconnected,
                              fun() -> maps:get(reconnects, vmq_pgevents:status()) > R0 end, 30000),
            #{last_error := Err} = vmq_pgevents:status(),
            ?assertMatch({_, _}, binary:match(Err, <<"no answer from the server within 1000 ms">>))
        end)
    end}.

dead_letter_fault(T, Env, Fault) ->
    pgev_pg:sql("DROP TABLE IF EXISTS " ++ T ++ ", " ++ T ++ "_dead CASCADE"),
    pgev_pg:sql("DROP SEQUENCE IF EXISTS " ++ T ++ "_once"),
    pgev_app:start(T, [{batch_size, 1000}, {flush_interval_ms, 200} | Env]),
    try
        publish(1),
        pgev_app:flush(),
        pgev_pg:sql("ALTER TABLE " ++ T ++ " ADD CHECK (topic IS DISTINCT FROM 'zz-refused')"),
        %% the first dead-letter write waits 3 s (a sequence: not undone by a rollback)
        pgev_pg:sql("CREATE SEQUENCE " ++ T ++ "_once"),
        pgev_pg:sql("CREATE FUNCTION " ++ T ++ "_slow() RETURNS trigger LANGUAGE plpgsql AS $$ "
                    "BEGIN IF nextval('" ++ T ++ "_once') = 1 THEN PERFORM pg_sleep(3); END IF; "
                    "RETURN NEW; END $$"),
        pgev_pg:sql("CREATE TRIGGER slow AFTER INSERT ON " ++ T ++ "_dead FOR EACH ROW EXECUTE FUNCTION "
                    ++ T ++ "_slow()"),
        #{dead_lettered := D0, dead_letter_lost := L0} = vmq_pgevents:status(),
        [ok = vmq_pgevents:on_publish(<<"u">>, ?S, 0, [topic(I)], integer_to_binary(I), false)
         || I <- lists:seq(1, 100)],
        Fault(T),
        pgev_app:flush(),
        ?assertEqual(100, count(T)),   %% 1 before + 99
        ?assertEqual("zz-refused|37",
                     string:trim(pgev_pg:sql("SELECT string_agg(topic || '|' || convert_from(payload, 'UTF8'), ' ') FROM " ++ T ++ "_dead"))),
        #{dead_lettered := D1, dead_letter_lost := L1} = vmq_pgevents:status(),
        ?assertEqual({1, 0}, {D1 - D0, L1 - L0})
    after
        pgev_app:stop(),
        pgev_pg:sql("DROP FUNCTION IF EXISTS " ++ T ++ "_slow() CASCADE")
    end.

dead_copy_running(T) ->
    "1" =:= string:trim(pgev_pg:sql(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'vmq_pgevents' "
        "AND state = 'active' AND query LIKE 'COPY%" ++ T ++ "_dead%'")).

%% The writer connects and applies schema.sql when the plugin starts: the
%% table and its views are there before the first event, and status says
%% connected. With PostgreSQL down at start it keeps trying (the boot test
%% of the real-broker suite).
connect_at_start_test_() ->
    {timeout, 60, fun() ->
        T = "life_connect",
        pgev_pg:sql("DROP TABLE IF EXISTS " ++ T ++ " CASCADE"),
        ?assertEqual("", string:trim(pgev_pg:sql("SELECT to_regclass('" ++ T ++ "')"))),
        pgev_app:start(T),
        try
            State = wait_state(connected, 100),
            ?assertEqual(connected, State),
            ?assertEqual(T, string:trim(pgev_pg:sql("SELECT to_regclass('" ++ T ++ "')"))),
            ?assertEqual(T ++ "_connections",
                         string:trim(pgev_pg:sql("SELECT to_regclass('" ++ T ++ "_connections')"))),
            ?assertEqual(0, count(T)),
            #{pending := 0} = vmq_pgevents:status()
        after
            pgev_app:stop()
        end
    end}.

wait_state(Want, 0) -> maps:get(state, vmq_pgevents:status(), Want);
wait_state(Want, N) ->
    case vmq_pgevents:status() of
        #{state := Want} -> Want;
        _ -> timer:sleep(100), wait_state(Want, N - 1)
    end.
