%% @doc The journal (c_src/journal.c): a burst at hook speed, kill -9 of
%% the VM while events stream, the disk limit. Real NIF, real PostgreSQL,
%% a second real VM for the crash.
-module(vmq_pgevents_47_journal_tests).
-include_lib("eunit/include/eunit.hrl").

-export([crash_child/1]).

%% over the rows of hooks' events (not the plugin's own: pgevents_start, ...)
count(T, What) -> pgev_pg:count("(SELECT * FROM " ++ T ++ " WHERE hook NOT LIKE 'pgevents\\_%') h", What).

scalar(Sql) -> pgev_pg:scalar(Sql).

exactly_once(T, N) -> ok = pgev_pg:exactly_once(T, N).

%% Procs processes each call on_publish PerProc times as fast as they can
burst(Procs, PerProc, Payload) ->
    Self = self(),
    Pids = [spawn_link(fun() ->
                               S = {"", <<"burst-", (integer_to_binary(I))/binary>>},
                               burst_loop(S, PerProc, Payload),
                               Self ! {done, self()}
                       end) || I <- lists:seq(1, Procs)],
    [receive {done, P} -> ok end || P <- Pids],
    ok.

burst_loop(_, 0, _) -> ok;
burst_loop(S, K, Payload) ->
    ok = vmq_pgevents:on_publish(<<"u">>, S, 0, [<<"b">>], Payload, false),
    burst_loop(S, K - 1, Payload).

%% 2,000,000 calls from 20 processes at full speed (64-byte payloads) with
%% the default settings: the journal takes them as fast as the hooks make
%% them; none dropped, every one written once.
burst_test_() ->
    {timeout, 600, fun() ->
        T = "journal_burst",
        pgev_pg:sql("DROP TABLE IF EXISTS " ++ T ++ " CASCADE"),
        pgev_app:start(T, []),
        try
            #{dropped := D0} = vmq_pgevents:status(),
            T0 = erlang:monotonic_time(microsecond),
            burst(20, 100000, binary:copy(<<"x">>, 64)),
            T1 = erlang:monotonic_time(microsecond),
            #{dropped := D1, queue_peak := Peak, journal_no_room := NoRoom,
              journal_error := JErr} = vmq_pgevents:status(),
            NoRoom > 0 andalso io:format(user, "~n    burst: no room ~b (~ts)~n", [NoRoom, JErr]),
            pgev_app:flush(),
            T2 = erlang:monotonic_time(microsecond),
            io:format(user, "~n    burst: 2,000,000 calls in ~b ms (~b calls/s), queue peak ~b, "
                      "all written ~b ms after the first call~n",
                      [(T1 - T0) div 1000, 2000000 * 1000000 div max(1, T1 - T0), Peak,
                       (T2 - T0) div 1000]),
            ?assertEqual(0, D1 - D0),
            exactly_once(T, 2000000),
            #{journal := true, dropped := D2} = vmq_pgevents:status(),
            ?assertEqual(0, D2 - D0)
        after
            pgev_app:stop()
        end
    end}.

%% An idle broker writes nothing: the journal makes pages writable ahead
%% of the hooks only as far as their rate needs, so once they stop no
%% zeros are made dirty for each sync to write (a fixed 16 MiB window had
%% an idle VM write ~15 MB/s). Measured as the kernel counts the VM's
%% writes (/proc/self/io: bytes it made dirty for the disk).
idle_writes_nothing_test_() ->
    {timeout, 120, fun() ->
        T = "journal_idle",
        pgev_pg:sql("DROP TABLE IF EXISTS " ++ T ++ " CASCADE"),
        pgev_app:start(T, [{journal_sync_ms, 200}]),
        try
            burst(2, 50000, binary:copy(<<"i">>, 64)),
            pgev_app:flush(),
            exactly_once(T, 100000),
            timer:sleep(2000),                 %% the window shrinks to nothing
            W0 = write_bytes(),
            timer:sleep(3000),                 %% 15 syncs
            Idle = write_bytes() - W0,
            io:format(user, "~n    idle: ~b bytes written in 3 s~n", [Idle]),
            ?assert(Idle < 1000000),
            %% and it still takes what comes next, at once
            burst(1, 1000, <<"again">>),
            pgev_app:flush(),
            exactly_once(T, 101000)
        after
            pgev_app:stop()
        end
    end}.

%% the calls the child reported returned so far (its progress file)
returned(Progress) ->
    case file:read_file(Progress) of
        {ok, Bin} when byte_size(Bin) =:= 20 * 8 -> lists:sum([K || <<K:64>> <= Bin]);
        _ -> 0
    end.

write_bytes() ->
    {ok, B} = file:read_file("/proc/self/io"),
    {match, [V]} = re:run(B, "^write_bytes: ([0-9]+)", [multiline, {capture, all_but_first, binary}]),
    binary_to_integer(V).

%% The disk limit: with PostgreSQL away and spool_max_bytes small, the
%% journal fills; what does not fit is dropped: counted per hook, logged,
%% a gap in seq. Everything that fitted is written once PostgreSQL is back.
disk_limit_test_() ->
    {timeout, 300, fun() ->
        T = "journal_limit",
        pgev_pg:sql("DROP TABLE IF EXISTS " ++ T ++ " CASCADE"),
        pgev_pg:stop(),
        try
            pgev_app:start(T, [{spool_max_bytes, 4194304}]),   %% 4 MiB: 1 MiB segments
            pgev_app:capture_logs(),
            #{dropped := D0, last_seq := L0, per_hook := #{on_publish := #{dropped := HD0}}} =
                vmq_pgevents:status(),
            burst(4, 10000, binary:copy(<<"y">>, 200)),        %% ~18 MB of events
            %% the hooks count the drops at once; the writer reports them
            pgev_app:wait_for(drops_logged,
                              fun() -> pgev_app:log_seen(<<"no room in the journal">>) end),
            #{dropped := D1, last_seq := L1, journal_no_room := NoRoom, journal_bytes := Bytes,
              per_hook := #{on_publish := #{dropped := HookDropped}}} = vmq_pgevents:status(),
            Dropped = D1 - D0,
            ?assertEqual(40000, L1 - L0),
            ?assert(Dropped > 20000),
            ?assertEqual(Dropped, NoRoom),
            ?assertEqual(Dropped, HookDropped - HD0),
            ?assert(Bytes =< 4194304),
            Logs = pgev_app:captured_logs(),
            ?assertMatch([_ | _], [L || L <- Logs, binary:match(L, <<"no room in the journal">>) =/= nomatch]),
            pgev_pg:start(),
            pgev_app:flush(),
            %% the table against the drops the hooks counted: every event
            %% not dropped is there, once
            Kept = 40000 - Dropped,
            ?assertEqual(Kept, count(T, "count(*)")),
            ?assertEqual(Kept, count(T, "count(DISTINCT seq)")),
            %% and they are the ones that came first: the journal took events
            %% until it was full, and every one after that was dropped (all
            %% the same size): the rows are seq L0 + 1 .. L0 + Kept, the drops
            %% the gap after them, up to L1
            ?assertEqual([#{<<"lo">> => L0 + 1, <<"hi">> => L0 + Kept}],
                         pgev_pg:rows("SELECT min(seq) AS lo, max(seq) AS hi FROM " ++ T ++
                                      " WHERE hook = 'on_publish'")),
            %% and the record says so itself: a pgevents_dropped row once
            %% there was room, and completeness names that gap, dropped for
            %% no room (since this test's first row: the VM's incarnation
            %% is older than the table)
            pgev_app:wait_for(drop_row, fun() ->
                pgev_app:flush(),
                [R || R <- pgev_app:plugin_rows(T), maps:get(<<"hook">>, R) =:= <<"pgevents_dropped">>,
                      maps:get(<<"first_seq">>, maps:get(<<"extra">>, R)) > L0] =/= []
            end),
            ?assertEqual([#{<<"first_seq">> => L0 + Kept + 1, <<"last_seq">> => L1, <<"dropped">> => Dropped,
                            <<"reasons">> => #{<<"no_room">> => Dropped},
                            <<"hooks">> => #{<<"on_publish">> => Dropped}}],
                         %% (an earlier test's drops may be told here too, before)
                         [E || R <- pgev_app:plugin_rows(T), maps:get(<<"hook">>, R) =:= <<"pgevents_dropped">>,
                               #{<<"first_seq">> := F} = E <- [maps:get(<<"extra">>, R)], F > L0]),
            ?assertEqual([#{<<"missing">> => Dropped,
                            <<"missing_ranges">> => [#{<<"from">> => L0 + Kept + 1, <<"to">> => L1,
                                                       <<"count">> => Dropped,
                                                       <<"why">> => <<"dropped: no_room">>}]}],
                         pgev_pg:rows("SELECT missing, missing_ranges FROM " ++ T ++ "_completeness("
                                      "(SELECT min(ts) FROM " ++ T ++ " WHERE hook = 'on_publish'))"))
        after
            _ = pgev_app:captured_logs(),
            pgev_pg:start(),
            catch pgev_app:stop()
        end
    end}.

%% kill -9 of a VM streaming 20,000 events/s into a healthy PostgreSQL,
%% once 40,000 of its calls had returned: started again with the same spool_dir, every event whose hook call had
%% returned is in the table, once. The child VM writes, per process, the
%% number of its last returned call into a file (after the call returns).
crash_test_() ->
    {timeout, 300, fun() -> crash("journal_crash", up) end}.

%% The same with PostgreSQL stopped and the journal's sync in effect off
%% (journal_sync_ms an hour): nothing of the 40,000 or more events had
%% reached the files in spool_dir (their first record is empty), they were only in the
%% journal's memory files in /dev/shm, which outlive the killed VM; the next
%% start reads them all.
crash_memory_test_() ->
    {timeout, 300, fun() -> crash("journal_crash_mem", down) end}.

crash(T, Pg) ->
    pgev_pg:sql("DROP TABLE IF EXISTS " ++ T ++ " CASCADE"),
    Spool = pgev_app:spool_dir(T),
    os:cmd("rm -rf '" ++ Spool ++ "'"),
    Progress = filename:join(pgev_pg:dir(), "crash_progress"),
    ok = file:write_file(Progress, <<0:(20 * 64)>>),
    Erl = os:find_executable("erl"),
    Pa = [filename:absname(D) || D <- [filename:dirname(code:which(vmq_pgevents)),
                                       filename:dirname(code:which(?MODULE))]],
    Args = ["-noshell", "-pa" | Pa] ++
        ["-eval", "vmq_pgevents_47_journal_tests:crash_child([\"" ++ T ++ "\", \"" ++ Spool ++
             "\", \"" ++ Progress ++ "\", \"" ++ atom_to_list(Pg) ++ "\"])"],
    Pg =:= down andalso pgev_pg:stop(),
    try
        Port = open_port({spawn_executable, Erl}, [{args, Args}, {line, 1000}, exit_status,
                                                   stderr_to_stdout]),
        OsPid = child_pid(Port),
        %% killed in the middle of its stream: once 40,000 calls had returned
        pgev_app:wait_for(child_returned_40000, fun() -> returned(Progress) >= 40000 end, 120000),
        #{} = child_status(Port),
        os:cmd("kill -9 " ++ OsPid),
        receive {Port, {exit_status, _}} -> ok after 10000 -> error(child_not_killed) end
    after
        Pg =:= down andalso pgev_pg:start()
    end,
    {ok, Bin} = file:read_file(Progress),
    Returned = [K || <<K:64>> <= Bin],
    Pg =:= down andalso
        begin
            %% the files on disk hold none of it yet
            Files = filelib:wildcard(filename:join(Spool, "journal-*.dat")),
            ?assertNotEqual([], Files),
            [?assertMatch({ok, <<0:32>>}, first4(F)) || F <- Files]
        end,
    %% the child's rows so far, then this VM reads its journal
    Before = case Pg of up -> count(T, "count(*)"); down -> 0 end,   %% down: no table yet
    pgev_app:restart(T, []),
    try
        pgev_app:flush(),
        After = count(T, "count(*)"),
        io:format(user, "~n    kill -9 (PostgreSQL ~s): ~b calls had returned; ~b rows were in the "
                  "table, ~b after the restart~n", [Pg, lists:sum(Returned), Before, After]),
        [begin
             C = "'crash-" ++ integer_to_list(I) ++ "'",
             %% 1..K all there, each once (what came after the last
             %% progress write may be there too)
             ?assertEqual(K, scalar("SELECT count(DISTINCT convert_from(payload, 'UTF8')::int) FROM " ++ T ++
                                    " WHERE client_id = " ++ C ++ " AND convert_from(payload, 'UTF8')::int <= " ++
                                    integer_to_list(K))),
             ?assertEqual(0, scalar("SELECT count(*) - count(DISTINCT payload) FROM " ++ T ++
                                    " WHERE client_id = " ++ C))
         end || {I, K} <- lists:zip(lists:seq(1, 20), Returned)],
        %% the crashed incarnation: seq 1..n, no gap, nothing twice (this
        %% VM's incarnation wrote its own rows when it took the files over)
        Crashed = " (SELECT incarnation FROM " ++ T ++ " WHERE client_id LIKE 'crash-%') ",
        ?assertEqual(0, scalar("SELECT count(*) FROM (SELECT incarnation FROM " ++ T ++
                               " WHERE incarnation IN" ++ Crashed ++
                               " GROUP BY incarnation HAVING max(seq) - min(seq) + 1 <> count(*)"
                               " OR min(seq) <> 1) g")),
        %% and this VM's start said that it had not stopped
        ?assertEqual(1, scalar("SELECT count(*) FROM " ++ T ++ " WHERE hook = 'pgevents_crashed' "
                               "AND (extra->>'incarnation')::bigint IN" ++ Crashed))
    after
        pgev_app:stop()
    end.

%% the first 4 bytes of a segment file's first record (after the
%% segment's 16-byte header "VPGH", salt, CRC)
first4(File) ->
    {ok, F} = file:open(File, [read, raw, binary]),
    try
        {ok, <<"VPGH", _:96>>} = file:pread(F, 0, 16),
        file:pread(F, 16, 4)
    after file:close(F) end.

child_pid(Port) ->
    receive
        {Port, {data, {eol, "pid " ++ P}}} -> P;
        {Port, {data, _}} -> child_pid(Port);
        {Port, {exit_status, S}} -> error({child_exited, S})
    after 30000 -> error(child_silent)
    end.

child_status(Port) ->
    receive {Port, {exit_status, S}} -> error({child_exited, S}) after 0 -> #{} end.

%% in the child VM
crash_child([T, Spool, Progress, Pg]) ->
    logger:set_primary_config(level, error),
    pgev_app:restart(T, [{spool_dir, Spool} | [{journal_sync_ms, 3600000} || Pg =:= "down"]]),
    io:format("pid ~s~n", [os:getpid()]),
    [spawn(fun() -> crash_stream(I, Progress) end) || I <- lists:seq(1, 20)],
    timer:sleep(infinity).

%% 1,000 events/s: 10 every 10 ms; after each returned call its number
%% goes to the progress file
crash_stream(I, Progress) ->
    {ok, F} = file:open(Progress, [read, write, raw, binary]),
    S = {"", <<"crash-", (integer_to_binary(I))/binary>>},
    T0 = erlang:monotonic_time(millisecond),
    crash_tick(S, F, (I - 1) * 8, T0, 0).

crash_tick(S, F, Off, Next, K) ->
    Now = erlang:monotonic_time(millisecond),
    Now < Next andalso timer:sleep(Next - Now),
    lists:foreach(fun(J) ->
                          ok = vmq_pgevents:on_publish(<<"u">>, S, 0, [<<"c">>],
                                                       integer_to_binary(K + J), false),
                          ok = file:pwrite(F, Off, <<(K + J):64>>)
                  end, lists:seq(1, 10)),
    crash_tick(S, F, Off, Next + 10, K + 10).
