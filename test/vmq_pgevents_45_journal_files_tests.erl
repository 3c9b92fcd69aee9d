%% @doc The journal's files, the one place events wait: the plugin stopped
%% with events queued and PostgreSQL away, started again (same NIF, and
%% after a NIF reload: an earlier incarnation's files); a damaged journal
%% file; an earlier version's spool file; and the fault test: 200,000 events
%% from many processes while PostgreSQL is stopped, restarted and killed -9.
-module(vmq_pgevents_45_journal_files_tests).
-include_lib("eunit/include/eunit.hrl").

%% a steady stream of events, also for the Citus cluster (vmq_pgevents_87_citus_tests)
-export([stream/3, stream/4]).
publish(Procs, PerProc) -> publish(Procs, PerProc, 0).

%% Procs processes each publish PerProc events; PauseMs after every 50
publish(Procs, PerProc, PauseMs) ->
    Self = self(),
    Pids = [spawn_link(fun() ->
                               S = {"", <<"spool-", (integer_to_binary(I))/binary>>},
                               [begin
                                    ok = vmq_pgevents:on_publish(<<"u">>, S, 0, [<<"n">>],
                                                                 integer_to_binary(K), false),
                                    K rem 50 =:= 0 andalso PauseMs > 0 andalso timer:sleep(PauseMs)
                                end || K <- lists:seq(1, PerProc)],
                               Self ! {published, self()}
                       end) || I <- lists:seq(1, Procs)],
    [receive {published, P} -> ok after 300000 -> error(publisher_stuck) end || P <- Pids],
    ok.

%% over the rows of hooks' events (not the plugin's own: pgevents_start, ...)
count(T, What) -> pgev_pg:count("(SELECT * FROM " ++ T ++ " WHERE hook NOT LIKE 'pgevents\\_%') h", What).

scalar(Sql) -> pgev_pg:scalar(Sql).

exactly_once(T, N) -> ok = pgev_pg:exactly_once(T, N).

stop_and_restart_test_() ->
    {timeout, 300, fun() ->
        T = "journal_restart",
        pgev_pg:sql("DROP TABLE IF EXISTS " ++ T ++ " CASCADE"),
        try
            pgev_app:start(T, [{stop_timeout_ms, 200}]),
            pgev_app:flush(),                %% its start row written
            pgev_pg:stop(),
            #{spooled_at_stop := S0} = vmq_pgevents:status(),
            publish(2, 500),
            pgev_app:stop(),                 %% PostgreSQL away: the 1000 stay in the journal
            #{spooled_at_stop := S1} = vmq_pgevents:status(),
            ?assertEqual(1001, S1 - S0),     %% and the stop's row
            %% the same NIF, started again with PostgreSQL up
            pgev_pg:start(),
            pgev_app:restart(T, []),
            pgev_app:flush(),
            exactly_once(T, 1000),
            %% again, across a NIF reload: the journal files are an earlier incarnation's
            pgev_pg:stop(),
            publish(2, 500),
            pgev_app:stop(),
            true = code:delete(vmq_pgevents_nif),
            code:purge(vmq_pgevents_nif),
            {module, _} = code:load_file(vmq_pgevents_nif),
            pgev_pg:start(),
            pgev_app:restart(T, []),
            publish(1, 10),                  %% new events: written after the earlier ones
            pgev_app:flush(),
            ?assertEqual(2010, count(T, "count(*)")),
            ?assertEqual(2, count(T, "count(DISTINCT incarnation)")),
            %% the older incarnation's events were committed before the
            %% newer incarnation's (transaction ids of their rows)
            ?assertEqual(1, scalar("SELECT (max(xmin::text::bigint) FILTER (WHERE incarnation = i.lo) < "
                                   "min(xmin::text::bigint) FILTER (WHERE incarnation = i.hi))::int FROM " ++ T ++
                                   ", (SELECT min(incarnation) lo, max(incarnation) hi FROM " ++ T ++ ") i"))
        after
            pgev_pg:start(),
            catch pgev_app:stop()
        end
    end}.

%% VerneMQ keeps calling a plugin's hooks after its application stopped
%% (stopped by itself, by vmq-admin node stop, or enabled at run time and
%% the broker stopped). Nothing would write or keep those events: they are
%% dropped and counted (dropped, dropped_after_stop) and the next start
%% says how many; the events before the stop and after the start are
%% written, in order.
after_stop_test_() ->
    {timeout, 120, fun() ->
        [after_stop(J) || J <- [true, false]]
    end}.

after_stop(Journal) ->
    T = "journal_after_stop",
    pgev_pg:sql("DROP TABLE IF EXISTS " ++ T ++ " CASCADE"),
    pgev_app:start(T, [{journal, Journal}]),
    try
        payloads(1, 10),
        pgev_app:flush(),
        pgev_app:stop(),
        #{dropped := D0, dropped_after_stop := A0} = vmq_pgevents:status(),
        payloads(11, 15),
        #{dropped := D1, dropped_after_stop := A1} = vmq_pgevents:status(),
        %% (apart from the "no room" drops: dropped stays)
        ?assertEqual({0, 5}, {D1 - D0, A1 - A0}),
        pgev_app:capture_logs(),
        pgev_app:restart(T, [{journal, Journal}]),
        Logs = pgev_app:captured_logs(),
        ?assertMatch([_], [L || L <- Logs, binary:match(L, <<"5 events of hooks called while the plugin "
                                                             "was stopped were not recorded">>) =/= nomatch]),
        payloads(16, 20),
        pgev_app:flush(),
        ?assertEqual([integer_to_list(I) || I <- lists:seq(1, 10) ++ lists:seq(16, 20)],
                     string:lexemes(pgev_pg:sql("SELECT convert_from(payload, 'UTF8') FROM " ++ T ++
                                                " ORDER BY incarnation, seq"), "\n"))
    after
        catch pgev_app:stop()
    end.

payloads(From, To) ->
    [ok = vmq_pgevents:on_publish(<<"u">>, {"", <<"after-stop">>}, 0, [<<"t">>], integer_to_binary(I), false)
     || I <- lists:seq(From, To)],
    ok.

%% the 100 events of a stop with PostgreSQL away, their journal file
%% (Bin) and each record's offset in it
stopped_with_100(T) ->
    pgev_app:start(T, [{stop_timeout_ms, 200}]),
    pgev_app:flush(),           %% the start's row written (it stays in the file)
    pgev_pg:stop(),
    publish(1, 100),
    pgev_app:stop(),
    [File] = filelib:wildcard(filename:join(pgev_app:spool_dir(T), "journal-*.dat")),
    {ok, Bin} = file:read_file(File),
    Recs = [Pos || {Pos, 4} <- binary:matches(Bin, <<"VPGJ">>), Pos rem 8 =:= 0],
    %% the start's row (written, first), the 100 and the stop's row, last
    ?assertEqual(102, length(Recs)),
    {File, Bin, lists:sublist(Recs, 2, 100)}.

flip(Bin, At) ->
    <<Head:At/binary, B, Tail/binary>> = Bin,
    <<Head/binary, (B bxor 16#5A), Tail/binary>>.

%% a byte flipped in the 51st record of a journal file left at a stop:
%% that record skipped, counted and logged, the other 99 written
damaged_journal_test_() ->
    {timeout, 300, fun() ->
        T = "journal_broken",
        pgev_pg:sql("DROP TABLE IF EXISTS " ++ T ++ " CASCADE"),
        try
            {File, Bin, Recs} = stopped_with_100(T),
            ok = file:write_file(File, flip(Bin, lists:nth(51, Recs) + 60)),
            {Corrupt, #{spool_bytes := 0}} = read_back(T),
            ?assertEqual(1, Corrupt),
            ?assertEqual(99, count(T, "count(*)")),            %% one record lost, reported
            ?assertEqual(0, count(T, "count(*) FILTER (WHERE payload = '51')")),
            ?assertEqual(99, count(T, "count(DISTINCT payload)")),
            ?assertNot(filelib:is_file(File)),                  %% written: gone
            Logs = pgev_app:captured_logs(),
            ?assertMatch([_], [L || L <- Logs, binary:match(L, <<"damaged">>) =/= nomatch]),
            %% (the 99 and the stop's row: the start's row before them,
            %% written, is not read again: the file's cursor file)
            ?assertMatch([_], [L || L <- Logs, binary:match(L, <<"100 events">>) =/= nomatch]),
            %% one start row each of the two starts
            ?assertEqual(2, scalar("SELECT count(*) FROM " ++ T ++ " WHERE hook = 'pgevents_start'"))
        after
            read_back_done()
        end
    end}.

%% PostgreSQL up, the plugin started again with its log captured, all
%% written: the damaged records counted meanwhile, and the status
read_back(T) ->
    pgev_pg:start(),
    #{spool_corrupt := C0} = vmq_pgevents:status(),
    pgev_app:capture_logs(),
    pgev_app:restart(T, []),
    pgev_app:flush(),
    #{spool_corrupt := C1} = S = vmq_pgevents:status(),
    {C1 - C0, S}.

read_back_done() ->
    _ = pgev_app:captured_logs(),
    pgev_pg:start(),
    catch pgev_app:stop().

%% An earlier version's spool file (spool-<incarnation>.dat: "VPGS" |
%% length | CRC-32 | the event's bytes), one record damaged: converted into
%% a journal file at start, 99 rows written, the damaged one counted and
%% logged, the file gone. The records are made from a journal file's:
%% the event's bytes from seq on (offset 24 + 8, the record's length).
legacy_spool_test_() ->
    {timeout, 300, fun() ->
        T = "journal_legacy",
        pgev_pg:sql("DROP TABLE IF EXISTS " ++ T ++ " CASCADE"),
        try
            {File, Bin, Recs} = stopped_with_100(T),
            Spool = [begin
                         <<_:Pos/binary, "VPGJ", Len:32, _/binary>> = Bin,
                         <<_:(Pos + 32)/binary, Ev:Len/binary, _/binary>> = Bin,
                         <<"VPGS", Len:32, (erlang:crc32(Ev)):32, Ev/binary>>
                     end || Pos <- Recs],
            Legacy = iolist_to_binary(Spool),
            SpoolFile = filename:join(pgev_app:spool_dir(T), "spool-12345.dat"),
            ok = file:write_file(SpoolFile, flip(Legacy, byte_size(Legacy) div 2)),
            ok = file:delete(File),
            {Corrupt, _} = read_back(T),
            ?assertEqual(1, Corrupt),
            ?assertEqual(99, count(T, "count(*)")),
            ?assertEqual(99, count(T, "count(DISTINCT payload)")),
            ?assertEqual(99, count(T, "count(*) FILTER (WHERE incarnation = 12345 AND hook = 'on_publish')")),
            %% the spool file and the journal file it became: gone
            ?assertEqual([], filelib:wildcard(filename:join(pgev_app:spool_dir(T), "*12345*"))),
            Logs = pgev_app:captured_logs(),
            ?assertMatch([_], [L || L <- Logs, binary:match(L, <<"damaged">>) =/= nomatch])
        after
            read_back_done()
        end
    end}.

%% The fault test: 200,000 events streamed by 20 processes (about 100,000
%% a second) while PostgreSQL is stopped and started twice and killed -9
%% once; the journal holds them during the outages.
fault_test_() ->
    {timeout, 600, fun() -> fault() end}.

fault() ->
        T = "journal_fault",
        pgev_pg:sql("DROP TABLE IF EXISTS " ++ T ++ " CASCADE"),
        pgev_app:start(T, [{queue_max_events, 50000}, {batch_size, 5000}]),
        try
            Self = self(),
            #{dropped := D0} = vmq_pgevents:status(),
            Pub = spawn_link(fun() -> publish(20, 10000, 10), Self ! published end),
            Faults = [stop, start, kill, start, stop, start],
            [begin timer:sleep(300), pgev_pg:F() end || F <- Faults],
            receive published -> ok after 300000 -> error({publisher_stuck, Pub}) end,
            pgev_app:flush(),
            exactly_once(T, 200000),
            #{dropped := D1, journal := true} = vmq_pgevents:status(),
            ?assertEqual(0, D1 - D0)
        after
            pgev_pg:start(),
            pgev_app:stop()
        end.

%% A PostgreSQL that stops answering (SIGSTOP of the server and every
%% backend: what a network partition, a full disk or a stuck checkpoint
%% looks like) during a stream of 20,000 events/s, with the default
%% settings: frozen once 100,000 events were sent, thawed once 600,000 more
%% were (30 s of the stream). The writer's waits for the server are
%% bounded; the journal holds the backlog on disk (the VM's own memory
%% stays flat). Nothing dropped; after SIGCONT every event sent written
%% once, in order.
frozen_server_test_() ->
    {timeout, 300, fun() -> frozen() end}.

frozen() ->
        T = "journal_frozen",
        pgev_pg:sql("DROP TABLE IF EXISTS " ++ T ++ " CASCADE"),
        pgev_app:start(T, []),
        Anon0 = rss_anon_kb(),
        try
            Self = self(),
            #{dropped := D0} = vmq_pgevents:status(),
            {ok, Batch} = application:get_env(vmq_pgevents, batch_size),
            %% 20 processes x 1,000 events/s, 40,000 events each
            Sent = counters:new(1, [write_concurrency]),
            Total = 20 * 40000,
            Pub = spawn_link(fun() -> Total = stream(20, 1000, 40000, Sent), Self ! published end),
            Progress = fun() -> counters:get(Sent, 1) end,
            pgev_app:wait_for(sent_100000, fun() -> Progress() >= 100000 end, 120000),
            pgev_pg:freeze(),
            AtFreeze = Progress(),
            pgev_app:wait_for(sent_600000_more, fun() -> Progress() >= AtFreeze + 600000 end, 150000),
            AtThaw = Progress(),
            pgev_pg:thaw(),
            ?assert(AtThaw < Total),       %% thawed while the stream ran
            receive published -> ok after 120000 -> error({publisher_stuck, Pub}) end,
            pgev_app:flush(),
            exactly_once(T, Total),
            ok = pgev_pg:in_order(T),
            #{dropped := D1, queue_peak := Peak, journal := true} = vmq_pgevents:status(),
            ?assertEqual(0, D1 - D0),
            %% the journal took the frozen stretch: every event sent while
            %% frozen waited (but what the writer had in hand: two batches,
            %% and the calls of one tick under way when the counter was read)
            ?assert(Peak >= AtThaw - AtFreeze - 2 * Batch - 20 * 10),
            Grew = rss_anon_kb() - Anon0,
            io:format(user, "~n    frozen for ~b events with the journal: queue peak ~b events, "
                      "the VM's anonymous memory grew ~b KiB~n", [AtThaw - AtFreeze, Peak, Grew]),
            %% ... and not the VM's memory (under ASan its allocator keeps
            %% freed memory in quarantine: not a measure there)
            ?assert(Grew < 65536 orelse os:getenv("SANITIZE") =:= "1")
        after
            pgev_pg:thaw(),
            pgev_app:stop()
        end.

%% the VM's anonymous memory (not the journal's file pages), KiB
rss_anon_kb() ->
    {ok, S} = file:read_file("/proc/self/status"),
    {match, [K]} = re:run(S, "RssAnon:\\s+(\\d+)", [{capture, all_but_first, list}]),
    list_to_integer(K).

%% Procs processes, each Rate events/s in steps of 10 ms, Rate * Ms / 1000
%% events each: a fixed count at a nominal rate (on a slow machine the
%% stream takes longer, never sends fewer). Returns the number sent.
stream(Procs, Rate, Ms) ->
    stream(Procs, Rate, Ms, counters:new(1, [write_concurrency])).

%% the same, counting the events sent so far in Sent (counters, index 1)
stream(Procs, Rate, Ms, Sent) ->
    Self = self(),
    PerTick = Rate div 100,
    Ticks = Rate * Ms div 1000 div PerTick,
    Pids = [spawn_link(fun() ->
                               S = {"", <<"frozen-", (integer_to_binary(I))/binary>>},
                               T0 = erlang:monotonic_time(millisecond),
                               stream_ticks(S, PerTick, T0, Ticks, 0, Sent),
                               Self ! {streamed, self()}
                       end) || I <- lists:seq(1, Procs)],
    [receive {streamed, P} -> ok end || P <- Pids],
    Procs * Ticks * PerTick.

stream_ticks(_, _, _, 0, _, _) -> ok;
stream_ticks(S, PerTick, Next, Ticks, K, Sent) ->
    Now = erlang:monotonic_time(millisecond),
    Now < Next andalso timer:sleep(Next - Now),
    [ok = vmq_pgevents:on_publish(<<"u">>, S, 0, [<<"f">>], integer_to_binary(K + J), false)
     || J <- lists:seq(1, PerTick)],
    counters:add(Sent, 1, PerTick),
    stream_ticks(S, PerTick, Next + 10, Ticks - 1, K + PerTick, Sent).
