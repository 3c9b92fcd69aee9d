%% @doc The on-disk spool: PostgreSQL away for long with a small memory
%% limit (memory stays bounded, nothing dropped, all arrives in order);
%% the plugin stopped with events queued and PostgreSQL away, started
%% again (same NIF, and after a NIF reload: an earlier incarnation's file);
%% a damaged spool file; and the fault test: 200,000 events from many
%% processes while PostgreSQL is stopped, restarted and killed -9.
-module(vmq_pgevents_45_spool_tests).
-include_lib("eunit/include/eunit.hrl").

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

count(T, What) -> pgev_pg:count(T, What).

scalar(Sql) -> pgev_pg:scalar(Sql).

exactly_once(T, N) -> ok = pgev_pg:exactly_once(T, N).

long_outage_small_memory_test_() ->
    {timeout, 300, fun() ->
        T = "spool_outage",
        pgev_pg:sql("DROP TABLE IF EXISTS " ++ T ++ " CASCADE"),
        pgev_pg:stop(),
        try
            %% the journal off: events wait in memory and overflow to the spool
            pgev_app:start(T, [{queue_max_events, 4000}, {batch_size, 500}, {journal, false}]),
            #{dropped := D0} = vmq_pgevents:status(),
            publish(8, 5000, 20),                 %% 40,000 events, ~20,000 a second
            timer:sleep(300),
            #{dropped := D1, spooled := Spooled, spool_bytes := Bytes, queue_peak := Peak,
              per_hook := #{on_publish := #{spooled := HookSpooled}}} = vmq_pgevents:status(),
            ?assertEqual(Spooled, HookSpooled),    %% every event spooled so far was an on_publish
            ?assertEqual(0, D1 - D0),
            ?assert(Spooled >= 30000),
            ?assert(Bytes > 0),
            ?assert(Peak =< 4000),                              %% memory stayed bounded
            pgev_pg:start(),
            pgev_app:flush(),
            exactly_once(T, 40000),
            #{spool_bytes := 0} = vmq_pgevents:status(),
            %% in order: by seq, the payloads of one client count up
            ?assertEqual(0, scalar("SELECT count(*) FROM (SELECT convert_from(payload, 'UTF8')::int AS k, "
                                   "lag(convert_from(payload, 'UTF8')::int) OVER (PARTITION BY client_id "
                                   "ORDER BY seq) AS prev FROM " ++ T ++ ") x WHERE k <> prev + 1"))
        after
            pgev_pg:start(),
            pgev_app:stop()
        end
    end}.

stop_and_restart_test_() ->
    {timeout, 300, fun() ->
        T = "spool_restart",
        pgev_pg:sql("DROP TABLE IF EXISTS " ++ T ++ " CASCADE"),
        pgev_pg:stop(),
        try
            pgev_app:start(T, [{stop_timeout_ms, 200}]),
            #{spooled_at_stop := S0} = vmq_pgevents:status(),
            publish(2, 500),
            pgev_app:stop(),                 %% PostgreSQL away: the 1000 go to the spool
            #{spooled_at_stop := S1} = vmq_pgevents:status(),
            ?assertEqual(1000, S1 - S0),
            %% the same NIF, started again with PostgreSQL up
            pgev_pg:start(),
            pgev_app:restart(T, []),
            pgev_app:flush(),
            exactly_once(T, 1000),
            %% again, across a NIF reload: the spool file is an earlier incarnation's
            pgev_pg:stop(),
            publish(2, 500),
            pgev_app:stop(),
            true = code:delete(vmq_pgevents_nif),
            code:purge(vmq_pgevents_nif),
            {module, _} = code:load_file(vmq_pgevents_nif),
            pgev_pg:start(),
            pgev_app:restart(T, []),
            publish(1, 10),                  %% new events: written after the spooled ones
            pgev_app:flush(),
            ?assertEqual(2010, count(T, "count(*)")),
            ?assertEqual(2, count(T, "count(DISTINCT incarnation)")),
            %% the older incarnation's spooled events were committed before the
            %% newer incarnation's (transaction ids of their rows)
            ?assertEqual(1, scalar("SELECT (max(xmin::text::bigint) FILTER (WHERE incarnation = i.lo) < "
                                   "min(xmin::text::bigint) FILTER (WHERE incarnation = i.hi))::int FROM " ++ T ++
                                   ", (SELECT min(incarnation) lo, max(incarnation) hi FROM " ++ T ++ ") i"))
        after
            pgev_pg:start(),
            catch pgev_app:stop()
        end
    end}.

damaged_spool_test_() ->
    {timeout, 300, fun() ->
        T = "spool_broken",
        pgev_pg:sql("DROP TABLE IF EXISTS " ++ T ++ " CASCADE"),
        pgev_pg:stop(),
        try
            pgev_app:start(T, [{stop_timeout_ms, 200}, {journal, false}]),
            publish(1, 100),
            pgev_app:stop(),
            [File] = filelib:wildcard(filename:join(pgev_app:spool_dir(T), "spool-*.dat")),
            {ok, Bin} = file:read_file(File),
            Mid = byte_size(Bin) div 2,
            <<Head:Mid/binary, B, Tail/binary>> = Bin,
            ok = file:write_file(File, <<Head/binary, (B bxor 16#5A), Tail/binary>>),
            pgev_pg:start(),
            #{spool_corrupt := C0} = vmq_pgevents:status(),
            pgev_app:capture_logs(),
            pgev_app:restart(T, [{journal, false}]),
            pgev_app:flush(),
            #{spool_corrupt := C1} = vmq_pgevents:status(),
            ?assertEqual(1, C1 - C0),
            ?assertEqual(99, count(T, "count(*)")),            %% one record lost, reported
            Logs = pgev_app:captured_logs(),
            ?assertMatch([_], [L || L <- Logs, binary:match(L, <<"damaged">>) =/= nomatch])
        after
            _ = pgev_app:captured_logs(),
            pgev_pg:start(),
            catch pgev_app:stop()
        end
    end}.

%% (40,000 events through a 4,000-event queue during an outage.)

%% The fault test: 200,000 events streamed by 20 processes (about 100,000
%% a second) while PostgreSQL is stopped and started twice and killed -9
%% once; the journal holds them during the outages (with the journal off,
%% the queue overflows to the spool).
fault_test_() ->
    [{"journal " ++ atom_to_list(J), {timeout, 600, fun() -> fault(J) end}} || J <- [true, false]].

fault(Journal) ->
        T = "spool_fault_" ++ atom_to_list(Journal),
        pgev_pg:sql("DROP TABLE IF EXISTS " ++ T ++ " CASCADE"),
        pgev_app:start(T, [{queue_max_events, 50000}, {batch_size, 5000}, {journal, Journal}]),
        try
            Self = self(),
            #{dropped := D0, spooled := Sp0} = vmq_pgevents:status(),
            Pub = spawn_link(fun() -> publish(20, 10000, 10), Self ! published end),
            Faults = [stop, start, kill, start, stop, start],
            [begin timer:sleep(300), pgev_pg:F() end || F <- Faults],
            receive published -> ok after 300000 -> error({publisher_stuck, Pub}) end,
            pgev_app:flush(),
            exactly_once(T, 200000),
            #{dropped := D1, spooled := Sp1, journal := J} = vmq_pgevents:status(),
            ?assertEqual(0, D1 - D0),
            ?assertEqual(Journal, J),
            ?assert(Journal orelse Sp1 > Sp0)   %% without the journal the spool took part
        after
            pgev_pg:start(),
            pgev_app:stop()
        end.

%% A PostgreSQL that stops answering (SIGSTOP of the server and every
%% backend: what a network partition, a full disk or a stuck checkpoint
%% looks like) for 30 s during a stream of 20,000 events/s, with the
%% default settings: the writer's waits for the server are bounded; the
%% journal holds the backlog on disk (the VM's own memory stays flat).
%% With the journal off, what does not fit in memory goes to the spool.
%% Nothing dropped; after SIGCONT every event written once, in order.
frozen_server_test_() ->
    [{"journal " ++ atom_to_list(J), {timeout, 300, fun() -> frozen(J) end}} || J <- [true, false]].

frozen(Journal) ->
        T = "spool_frozen_" ++ atom_to_list(Journal),
        pgev_pg:sql("DROP TABLE IF EXISTS " ++ T ++ " CASCADE"),
        pgev_app:start(T, [{journal, Journal} || not Journal]),
        Anon0 = rss_anon_kb(),
        try
            Self = self(),
            #{dropped := D0, spooled := Sp0} = vmq_pgevents:status(),
            %% 20 processes x 1,000 events/s for 40 s
            Pub = spawn_link(fun() -> stream(20, 1000, 40000), Self ! published end),
            timer:sleep(5000),
            pgev_pg:freeze(),
            timer:sleep(30000),
            pgev_pg:thaw(),
            receive published -> ok after 120000 -> error({publisher_stuck, Pub}) end,
            pgev_app:flush(),
            N = count(T, "count(*)"),
            ?assert(N >= 700000),
            exactly_once(T, N),
            #{dropped := D1, spooled := Sp1, queue_peak := Peak, journal := J} = vmq_pgevents:status(),
            ?assertEqual(0, D1 - D0),
            ?assertEqual(Journal, J),
            case Journal of
                true ->
                    ?assert(Peak > 300000),        %% the journal took the frozen stretch
                    Grew = rss_anon_kb() - Anon0,
                    io:format(user, "~n    frozen 30 s with the journal: queue peak ~b events, "
                              "the VM's anonymous memory grew ~b KiB~n", [Peak, Grew]),
                    %% ... and not the VM's memory (under ASan its allocator keeps
                    %% freed memory in quarantine: not a measure there)
                    ?assert(Grew < 65536 orelse os:getenv("SANITIZE") =:= "1");
                false ->
                    ?assert(Sp1 - Sp0 > 100000),   %% the spool took the frozen stretch
                    ?assert(Peak =< 100000)
            end
        after
            pgev_pg:thaw(),
            pgev_app:stop()
        end.

%% the VM's anonymous memory (not the journal's file pages), KiB
rss_anon_kb() ->
    {ok, S} = file:read_file("/proc/self/status"),
    {match, [K]} = re:run(S, "RssAnon:\\s+(\\d+)", [{capture, all_but_first, list}]),
    list_to_integer(K).

%% Procs processes, each Rate events/s in steps of 10 ms, for Ms
stream(Procs, Rate, Ms) ->
    Self = self(),
    PerTick = Rate div 100,
    Pids = [spawn_link(fun() ->
                               S = {"", <<"frozen-", (integer_to_binary(I))/binary>>},
                               T0 = erlang:monotonic_time(millisecond),
                               stream_ticks(S, PerTick, T0, T0 + Ms, 0),
                               Self ! {streamed, self()}
                       end) || I <- lists:seq(1, Procs)],
    [receive {streamed, P} -> ok end || P <- Pids],
    ok.

stream_ticks(S, PerTick, Next, End, K) ->
    case erlang:monotonic_time(millisecond) of
        Now when Now >= End -> ok;
        Now ->
            Now < Next andalso timer:sleep(Next - Now),
            [ok = vmq_pgevents:on_publish(<<"u">>, S, 0, [<<"f">>], integer_to_binary(K + J), false)
             || J <- lists:seq(1, PerTick)],
            stream_ticks(S, PerTick, Next + 10, End, K + PerTick)
    end.
