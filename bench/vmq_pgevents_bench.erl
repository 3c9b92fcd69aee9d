%% @doc `make bench`: hook call cost, sustained ingest and queue memory of
%% the plugin in a real VM against a private PostgreSQL with default
%% settings, reported next to the baselines bench/pg_baseline measured in
%% the same run. Prints a table; writes the numbers as JSON.
-module(vmq_pgevents_bench).

-export([main/1, noop_hook/6, hook_fun/2, calls/4, timed_calls/3, percentiles/2, json/1, ingest/1,
         ingest_turns/1, readback/0, publish_n/2, pg/1, start/2, stop/0]).

-define(CALLS, 1000000).
-define(INGEST, 1000000).
-define(TURNS, 3).
-define(S(N), {"", <<"bench-client-", (integer_to_binary(N))/binary>>}).

main([PgDir, OutJson, Baselines]) ->
    logger:set_primary_config(level, error),
    put(pgdir, PgDir),
    Base = parse_baselines(Baselines),
    Overhead = timer_overhead(),
    Mem = queue_memory(),          %% first: in a fresh VM, RSS growth is real
    Hooks = hook_costs(),
    Ingest = [ingest_turns(P) || P <- [64, 1024]],
    Readback = readback(),
    Result = #{machine => machine(), timer_overhead_ns => Overhead, hook_cost => Hooks,
               ingest => Ingest, memory => Mem, baselines => Base, readback => Readback},
    report(Result),
    ok = file:write_file(OutJson, json(Result)),
    io:format("~nJSON: ~ts~n", [OutJson]),
    halt(0).

%% ---- plugin control ------------------------------------------------------

pg(Cmd) -> os:cmd("bash test/pg.sh " ++ Cmd ++ " " ++ get(pgdir)).

start(Table, Env) ->
    _ = application:load(vmq_pgevents),
    pg("start"),
    psql("DROP TABLE IF EXISTS " ++ Table ++ " CASCADE"),
    Dsn = string:trim(pg("dsn")),
    [application:set_env(vmq_pgevents, K, V) ||
        {K, V} <- [{dsn, Dsn}, {table, Table}, {batch_size, 10000},
                   {queue_max_events, 3000000}, {queue_max_bytes, 4000000000},
                   {spool_max_bytes, 4000000000},
                   {backoff_min_ms, 20}, {backoff_max_ms, 200}, {stop_timeout_ms, 600000},
                   {spool_dir, get(pgdir) ++ "_spool"} | Env]],
    {ok, _} = application:ensure_all_started(vmq_pgevents),
    {ok, _} = vmq_pgevents:flush(60000),
    ok.

stop() ->
    ok = application:stop(vmq_pgevents),
    ok = application:unload(vmq_pgevents).

%% ---- hook call cost ---------------------------------------------------------

timer_overhead() ->
    N = 1000000,
    T0 = erlang:monotonic_time(nanosecond),
    _ = [begin A = erlang:monotonic_time(), B = erlang:monotonic_time(), B - A end || _ <- lists:seq(1, N)],
    T1 = erlang:monotonic_time(nanosecond),
    round((T1 - T0) / N).

%% the same call into a hook that does nothing: the baseline for what
%% calling any plugin costs under the same load (scheduling included)
noop_hook(_, _, _, _, _, _) -> ok.

hook_fun(noop, N) ->
    S = ?S(N), P = binary:copy(<<"x">>, 64),
    fun() -> ?MODULE:noop_hook(<<"bench">>, S, 1, [<<"bench">>, <<"topic">>], P, false) end;
hook_fun(on_publish, N) ->
    S = ?S(N), P = binary:copy(<<"x">>, 64),
    fun() -> vmq_pgevents:on_publish(<<"bench">>, S, 1, [<<"bench">>, <<"topic">>], P, false) end;
hook_fun(on_deliver, N) ->
    S = ?S(N), P = binary:copy(<<"x">>, 64),
    fun() -> vmq_pgevents:on_deliver(<<"bench">>, S, 1, [<<"bench">>, <<"topic">>], P, false, #{}) end;
hook_fun(auth_on_register, N) ->
    S = ?S(N),
    fun() -> vmq_pgevents:auth_on_register({{127, 0, 0, 1}, 40000 + N}, S, <<"bench">>,
                                           {encrypted, <<"x">>}, true) end.

hook_costs() ->
    start("bench_hooks", []),
    Up = [hook_cost(H, P, up) || H <- [noop, on_publish, on_deliver, auth_on_register], P <- [1, 10, 100]],
    Down = [hook_cost(H, P, down) || H <- [on_publish, on_deliver, auth_on_register], P <- [1, 100]],
    stop(),
    %% the same with the journal off (events in memory), for comparison
    start("bench_hooks", [{journal, false}]),
    Mem = [(hook_cost(on_publish, P, up))#{journal => false} || P <- [1, 100]],
    stop(),
    quiet_server(["bench_hooks"]),
    [H#{journal => true} || H <- Up ++ Down] ++ Mem.

%% every measured segment starts like the baselines did: earlier tables
%% gone, dirty pages written (no checkpoint of someone else's rows mid-run)
quiet_server(Tables) ->
    [psql("DROP TABLE IF EXISTS " ++ T ++ " CASCADE") || T <- Tables],
    psql("CHECKPOINT").

psql(Sql) ->
    os:cmd("bash test/pg.sh psql " ++ get(pgdir) ++ " -qc '" ++ Sql ++ "'").

hook_cost(Hook, Procs, PgState) ->
    case PgState of down -> pg("stop"); up -> ok end,
    Hist = counters:new(3000, [write_concurrency]),
    Per = ?CALLS div Procs,
    calls(Hook, Procs, Per, fun(F, K) -> timed_calls(F, K, Hist) end),
    #{dropped := Dropped, state := State} = vmq_pgevents:status(),
    case PgState of down -> pg("start"); up -> ok end,
    {ok, _} = vmq_pgevents:flush(600000),
    {P50, P99, P999} = percentiles(Hist, Per * Procs),
    #{journal := Journal} = vmq_pgevents:status(),
    io:format("hook ~p x~p (postgresql ~p, writer ~p, journal ~p): p50 ~.2f us, p99 ~.2f us, p99.9 ~.2f us~n",
              [Hook, Procs, PgState, State, Journal, P50, P99, P999]),
    #{hook => Hook, procs => Procs, postgresql => PgState, calls => Per * Procs,
      p50_us => P50, p99_us => P99, p999_us => P999, dropped => Dropped}.

%% Procs processes, each with its own hook_fun(Hook, I), started together,
%% each running Body(F, Per); returns when all are done
calls(Hook, Procs, Per, Body) ->
    Self = self(),
    Pids = [spawn_link(fun() ->
                               F = hook_fun(Hook, I),
                               receive go -> ok end,
                               Body(F, Per),
                               Self ! {done, self()}
                       end) || I <- lists:seq(1, Procs)],
    erlang:garbage_collect(),
    [P ! go || P <- Pids],
    [receive {done, P} -> ok end || P <- Pids],
    ok.

timed_calls(_, 0, _) -> ok;
timed_calls(F, N, Hist) ->
    T0 = erlang:monotonic_time(),
    F(),
    T1 = erlang:monotonic_time(),
    counters:add(Hist, bucket(erlang:convert_time_unit(T1 - T0, native, nanosecond)), 1),
    timed_calls(F, N - 1, Hist).

%% 10 ns buckets to 10 us, 1 us buckets to 1 ms, 1 ms buckets beyond
bucket(Ns) when Ns < 10000 -> 1 + Ns div 10;
bucket(Ns) when Ns < 1000000 -> 1001 + Ns div 1000;
bucket(Ns) -> 2001 + min(Ns div 1000000, 998).

bucket_us(B) when B =< 1000 -> (B - 1) * 10 / 1000;
bucket_us(B) when B =< 2000 -> (B - 1001) * 1.0;
bucket_us(B) -> (B - 2001) * 1000.0.

percentiles(Hist, Total) ->
    Counts = [counters:get(Hist, I) || I <- lists:seq(1, 3000)],
    {pct(Counts, Total * 0.5), pct(Counts, Total * 0.99), pct(Counts, Total * 0.999)}.

pct(Counts, Rank) -> pct(Counts, Rank, 1, 0).
pct([C | Rest], Rank, I, Acc) ->
    case Acc + C >= Rank of
        true -> bucket_us(I);
        false -> pct(Rest, Rank, I + 1, Acc + C)
    end;
pct([], _, I, _) -> bucket_us(I - 1).

%% ---- sustained ingest ------------------------------------------------------------

%% The plugin's ingest and a raw COPY of as many rows of the same size take
%% turns ?TURNS times on the same server (this machine's speed drifts over
%% minutes): the medians, and their ratio.
ingest_turns(PayloadBytes) ->
    Turns = [{copy_baseline(?INGEST, PayloadBytes), ingest(PayloadBytes)} || _ <- lists:seq(1, ?TURNS)],
    Copy = median([C || {C, _} <- Turns]),
    Rate = median([maps:get(events_per_s, I) || {_, I} <- Turns]),
    {_, Last} = lists:last(Turns),
    io:format("ingest ~b B: median of ~b turns ~b events/s against raw COPY ~b rows/s = ~.2fx~n",
              [PayloadBytes, ?TURNS, Rate, Copy, Rate / Copy]),
    Last#{events_per_s => Rate, copy_rows_per_s => Copy, vs_copy => Rate / Copy,
          turns => [#{copy_rows_per_s => C, events_per_s => maps:get(events_per_s, I),
                      prefetched => maps:get(prefetched, I), batches => maps:get(batches, I)}
                    || {C, I} <- Turns]}.

median(L) -> lists:nth((length(L) + 1) div 2, lists:sort(L)).

ingest(PayloadBytes) ->
    Table = "bench_ingest_" ++ integer_to_list(PayloadBytes),
    quiet_server(["bench_ingest_64", "bench_ingest_1024", "bench_memory"]),
    start(Table, []),
    Status0 = vmq_pgevents:status(),   %% its counters are the NIF's, across restarts
    MemBefore = erlang:memory(total),
    RssBefore = rss(),
    Procs = 4,
    Self = self(),
    P = binary:copy(<<"x">>, PayloadBytes),
    T0 = erlang:monotonic_time(microsecond),
    Pids = [spawn_link(fun() ->
                               S = ?S(I),
                               [vmq_pgevents:on_publish(<<"bench">>, S, 1, [<<"bench">>, <<"topic">>], P, false)
                                || _ <- lists:seq(1, ?INGEST div Procs)],
                               Self ! {done, self()}
                       end) || I <- lists:seq(1, Procs)],
    [receive {done, Pid} -> ok end || Pid <- Pids],
    T1 = erlang:monotonic_time(microsecond),
    RssPeak = rss(),
    {ok, _} = vmq_pgevents:flush(600000),
    T2 = erlang:monotonic_time(microsecond),
    #{queue_peak := Peak, queue_peak_bytes := PeakBytes, written := Written, dropped := Dropped,
      batches := Batches1, prefetched := Prefetched1} = vmq_pgevents:status(),
    #{batches := Batches0, prefetched := Prefetched0} = Status0,
    Batches = Batches1 - Batches0,
    Prefetched = Prefetched1 - Prefetched0,
    MemAfter = erlang:memory(total),
    stop(),
    Rate = ?INGEST / ((T2 - T0) / 1.0e6),
    io:format("ingest ~b B: ~b events, ~b events/s committed (hook calls done in ~.2f s), "
              "peak queue ~b events / ~b bytes, ~b COPY batches, ~b of them encoded during the "
              "commit before~n",
              [PayloadBytes, ?INGEST, round(Rate), (T1 - T0) / 1.0e6, Peak, PeakBytes, Batches,
               Prefetched]),
    #{payload_bytes => PayloadBytes, events => ?INGEST, written => Written, dropped => Dropped,
      batches => Batches, prefetched => Prefetched,
      seconds => (T2 - T0) / 1.0e6, events_per_s => round(Rate),
      calls_seconds => (T1 - T0) / 1.0e6,
      queue_peak_events => Peak, queue_peak_bytes => PeakBytes,
      vm_memory_before => MemBefore, vm_memory_after => MemAfter,
      rss_before => RssBefore, rss_at_peak => RssPeak}.

%% ---- reading a backlog back ---------------------------------------------------------
%% 1,000,000 events (64 B payloads) recorded while PostgreSQL is down, then
%% timed from PostgreSQL's start to the last committed row: (1) from the
%% journal of the running plugin; (2) from journal files a stop left, read
%% by the next start (what a restart after a crash reads; the start itself
%% is timed too). Each into a fresh table, right after a raw COPY of as
%% many rows into a fresh table of the same shape; ?TURNS turns, medians.

readback() ->
    Turns = [readback_turn(K) || K <- lists:seq(1, ?TURNS)],
    Med = fun(Key) -> median([maps:get(Key, T) || T <- Turns]) end,
    R = #{events => ?INGEST, turns => Turns,
          live_events_per_s => Med(live_events_per_s), live_copy_rows_per_s => Med(live_copy_rows_per_s),
          files_events_per_s => Med(files_events_per_s), files_copy_rows_per_s => Med(files_copy_rows_per_s)},
    #{live_events_per_s := L, live_copy_rows_per_s := LC, files_events_per_s := F,
      files_copy_rows_per_s := FC} = R,
    io:format("read back: median of ~b turns, from the running journal ~b events/s against raw COPY ~b rows/s = ~.2fx; "
              "from journal files at the next start ~b events/s against ~b = ~.2fx~n",
              [?TURNS, L, LC, L / LC, F, FC, F / FC]),
    R.

readback_turn(K) ->
    N = ?INGEST,
    LiveCopy = copy_baseline(N, 64),
    quiet_server(["bench_readback"]),
    start("bench_readback", [{stop_timeout_ms, 100}]),
    pg("stop"),
    publish_n(N, 64),
    pg("start"),
    T0 = erlang:monotonic_time(microsecond),
    {ok, _} = vmq_pgevents:flush(600000),
    T1 = erlang:monotonic_time(microsecond),
    Live = round(N / ((T1 - T0) / 1.0e6)),
    pg("stop"),
    publish_n(N, 64),
    #{spooled_at_stop := S0} = vmq_pgevents:status(),
    stop(),                                        %% they stay in the journal's files
    #{spooled_at_stop := S1} = vmq_pgevents_nif:status(),
    pg("start"),
    FilesCopy = copy_baseline(N, 64),
    quiet_server(["bench_readback", "bench_readback_next"]),
    _ = application:load(vmq_pgevents),
    [application:set_env(vmq_pgevents, Key, V) ||
        {Key, V} <- [{dsn, string:trim(pg("dsn"))}, {table, "bench_readback_next"}, {batch_size, 10000},
                     {spool_dir, get(pgdir) ++ "_spool"}, {spool_max_bytes, 4000000000}]],
    T2 = erlang:monotonic_time(microsecond),
    {ok, _} = application:ensure_all_started(vmq_pgevents),
    {ok, _} = vmq_pgevents:flush(600000),
    T3 = erlang:monotonic_time(microsecond),
    Rows = list_to_integer(string:trim(os:cmd("bash test/pg.sh psql " ++ get(pgdir) ++
                                              " -Atc \"SELECT count(*) FROM bench_readback_next WHERE hook = 'on_publish'\""))),
    stop(),
    quiet_server(["bench_readback_next"]),
    Files = round(N / ((T3 - T2) / 1.0e6)),
    io:format("read back, turn ~b: from the running journal ~b events/s (raw COPY ~b rows/s), "
              "from journal files at the next start ~b events/s (raw COPY ~b; ~b left at stop, ~b rows)~n",
              [K, Live, LiveCopy, Files, FilesCopy, S1 - S0, Rows]),
    N = Rows,
    #{live_events_per_s => Live, live_copy_rows_per_s => LiveCopy,
      files_events_per_s => Files, files_copy_rows_per_s => FilesCopy}.

%% raw COPY of N rows with Payload-byte payloads (bench/pg_baseline, batches
%% of 10,000 like the plugin's) into a fresh table of the plugin's shape,
%% right before what it is compared with: the same server state
copy_baseline(N, Payload) ->
    quiet_server(["bench_copy_rb"]),
    os:cmd("PGOPTIONS='-c vmq_pgevents.table=bench_copy_rb' bash test/pg.sh psql " ++ get(pgdir) ++
           " -q -f priv/schema.sql -c CHECKPOINT"),
    Out = os:cmd("_build/make/pg_baseline '" ++ string:trim(pg("dsn")) ++ "' bench_copy_rb copy " ++
                 integer_to_list(N) ++ " " ++ integer_to_list(Payload) ++ " 10000 2>/dev/null"),
    [_, _, _, Rate | _] = string:lexemes(Out, " \n"),
    quiet_server(["bench_copy_rb"]),
    R = list_to_integer(Rate),
    io:format("raw COPY, ~b B: ~b rows/s~n", [Payload, R]),
    R.

publish_n(N, PayloadBytes) ->
    Procs = 4,
    Self = self(),
    P = binary:copy(<<"x">>, PayloadBytes),
    Pids = [spawn_link(fun() ->
                               S = ?S(I),
                               [vmq_pgevents:on_publish(<<"bench">>, S, 1, [<<"bench">>, <<"topic">>], P, false)
                                || _ <- lists:seq(1, N div Procs)],
                               Self ! {done, self()}
                       end) || I <- lists:seq(1, Procs)],
    [receive {done, Pid} -> ok end || Pid <- Pids],
    ok.

%% ---- memory per queued event ------------------------------------------------------

queue_memory() ->
    start("bench_memory", [{journal, false}]),   %% in memory: what the VM holds per event
    pg("stop"),
    N = 200000,
    erlang:garbage_collect(),
    Rss0 = rss(),
    F = hook_fun(on_publish, 1),
    S = ?S(1),
    [vmq_pgevents:on_publish(<<"bench">>, S, 1, [<<"bench">>, <<"topic">>], <<>>, false)
     || _ <- lists:seq(1, N)],
    _ = F,
    Rss1 = rss(),
    #{queued_bytes := QB, queued := Q} = vmq_pgevents:status(),
    pg("start"),
    {ok, _} = vmq_pgevents:flush(600000),
    stop(),
    PerEvent = QB / Q,
    RssPer = (Rss1 - Rss0) / N,
    io:format("memory: ~.1f bytes accounted per queued event (empty payload; client id, "
              "username, topic included), ~.1f bytes of RSS per event~n", [PerEvent, RssPer]),
    #{events => N, accounted_bytes_per_event => PerEvent, rss_bytes_per_event => RssPer}.

rss() ->
    {ok, S} = file:read_file("/proc/" ++ os:getpid() ++ "/status"),
    {match, [Kb]} = re:run(S, "VmRSS:\\s+(\\d+) kB", [{capture, all_but_first, list}]),
    list_to_integer(Kb) * 1024.

%% ---- report ---------------------------------------------------------------------

parse_baselines(S) ->
    maps:from_list([begin [K, V] = string:split(KV, "="), {list_to_atom(K), list_to_integer(V)} end
                    || KV <- string:lexemes(S, ",")]).

machine() ->
    #{cores => erlang:system_info(logical_processors_available),
      schedulers => erlang:system_info(schedulers_online),
      otp => list_to_binary(erlang:system_info(otp_release)),
      cpu => list_to_binary(string:trim(os:cmd("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"))),
      postgresql => list_to_binary(string:trim(os:cmd("bash test/pg.sh psql " ++ get(pgdir) ++ " -Atc 'SHOW server_version'")))}.

report(#{hook_cost := Hooks, ingest := Ingest, memory := Mem, baselines := B, machine := M,
         timer_overhead_ns := Ov} = Res) ->
    io:format("~n== vmq_pgevents benchmark (~ts; ~b cores; OTP ~ts; PostgreSQL ~ts, fsync on, synchronous_commit on)~n",
              [maps:get(cpu, M), maps:get(cores, M), maps:get(otp, M), maps:get(postgresql, M)]),
    io:format("~nHook call cost (us, inside the VM, ~b calls each; includes ~b ns of timer overhead;~n"
              " noop = a hook function that does nothing, same arguments, same load)~n", [?CALLS, Ov]),
    io:format("  ~-18s ~5s ~6s ~8s ~8s ~8s ~8s~n", ["hook", "procs", "pg", "journal", "p50", "p99", "p99.9"]),
    [io:format("  ~-18s ~5b ~6s ~8s ~8.2f ~8.2f ~8.2f~n",
               [H, P, S, if J -> "on"; true -> "off" end, P50, P99, P999]) ||
        #{hook := H, procs := P, postgresql := S, journal := J, p50_us := P50, p99_us := P99,
          p999_us := P999} <- Hooks],
    io:format("~nSustained ingest, hook call to committed row (~b events, 4 calling processes, batch 10000;~n"
              " medians of ~b turns, each a raw COPY of as many rows then the plugin)~n", [?INGEST, ?TURNS]),
    io:format("  ~-8s ~12s ~14s ~14s ~10s ~10s~n", ["payload", "events/s", "raw COPY /s", "INSERT/s", "vs COPY", "vs INSERT"]),
    [begin
         Ins = maps:get(list_to_atom("insert" ++ integer_to_list(P)), B),
         io:format("  ~-8s ~12b ~14b ~14b ~9.2fx ~9.1fx~n",
                   [integer_to_list(P) ++ " B", R, Copy, Ins, R / Copy, R / Ins])
     end || #{payload_bytes := P, events_per_s := R, copy_rows_per_s := Copy} <- Ingest],
    [io:format("  ~b B: peak queue ~b events, ~.1f MB; VM memory ~.1f -> ~.1f MB; RSS ~.1f -> ~.1f MB at the peak~n",
               [P, Pk, PkB / 1.0e6, MB / 1.0e6, MA / 1.0e6, R0 / 1.0e6, R1 / 1.0e6])
     || #{payload_bytes := P, queue_peak_events := Pk, queue_peak_bytes := PkB, vm_memory_before := MB,
          vm_memory_after := MA, rss_before := R0, rss_at_peak := R1} <- Ingest],
    io:format("~nQueue memory per event beyond its payload (journal off): ~.1f bytes accounted, ~.1f bytes RSS~n",
              [maps:get(accounted_bytes_per_event, Mem), maps:get(rss_bytes_per_event, Mem)]),
    #{live_events_per_s := Live, live_copy_rows_per_s := LiveCopy, files_events_per_s := Files,
      files_copy_rows_per_s := FilesCopy} = maps:get(readback, Res),
    io:format("~nReading back a backlog of ~b events (64 B) recorded while PostgreSQL was down, into a~n"
              "fresh table (medians of ~b turns, each against a raw COPY of as many rows right before it):~n",
              [?INGEST, ?TURNS]),
    io:format("  from the running journal:         ~9b events/s = ~.2fx raw COPY (~b rows/s)~n",
              [Live, Live / LiveCopy, LiveCopy]),
    io:format("  from journal files, next start:   ~9b events/s = ~.2fx raw COPY (~b rows/s)~n",
              [Files, Files / FilesCopy, FilesCopy]).

%% ---- minimal JSON encoder ------------------------------------------------------------

json(M) when is_map(M) ->
    ["{", lists:join(",", [[json(to_bin(K)), ":", json(V)] || {K, V} <- lists:sort(maps:to_list(M))]), "}"];
json(L) when is_list(L) -> ["[", lists:join(",", [json(X) || X <- L]), "]"];
json(B) when is_binary(B) -> [$", B, $"];
json(A) when is_atom(A) -> [$", atom_to_list(A), $"];
json(I) when is_integer(I) -> integer_to_list(I);
json(F) when is_float(F) -> float_to_list(F, [{decimals, 3}, compact]).

to_bin(A) when is_atom(A) -> atom_to_binary(A);
to_bin(B) -> B.
