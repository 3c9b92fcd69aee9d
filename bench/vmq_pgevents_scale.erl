%% @doc The ingest half of `make bench-scale` (bench/run_bench_scale.sh):
%% one PostgreSQL against a Citus cluster (a coordinator and two workers)
%% on this machine, each server with its default settings. In each of
%% ?TURNS turns, for each of them, into a fresh table made by
%% priv/schema.sql: a raw COPY of ROWS rows (bench/pg_baseline, batches of
%% 10,000 like the plugin's, client ids over 1,000 clients) and the plugin
%% in this VM writing as many events of 1,000 clients. On the cluster also
%% the raw COPY into one shard on one worker, directly, and into a shard
%% on each worker at once. Medians; printed, and written as JSON.
-module(vmq_pgevents_scale).

-export([main/1]).

-define(TURNS, 3).
-define(CLIENTS, 1000).
-define(PROCS, 8).

main([Single, Coord, W1, W2, Rows, OutJson]) ->
    logger:set_primary_config(level, error),
    N = list_to_integer(Rows),
    Turns = [turn(K, N, Single, Coord, [W1, W2]) || K <- lists:seq(1, ?TURNS)],
    Keys = [single_copy, single_plugin, citus_copy, citus_plugin, shard_copy, workers_copy],
    Med = maps:from_list([{K, median([maps:get(K, T) || T <- Turns])} || K <- Keys]),
    R = Med#{rows => N, clients => ?CLIENTS, turns => Turns,
             single_plugin_vs_copy => maps:get(single_plugin, Med) / maps:get(single_copy, Med),
             citus_plugin_vs_copy => maps:get(citus_plugin, Med) / maps:get(citus_copy, Med),
             citus_vs_single_plugin => maps:get(citus_plugin, Med) / maps:get(single_plugin, Med),
             citus_vs_single_copy => maps:get(citus_copy, Med) / maps:get(single_copy, Med)},
    report(R),
    ok = file:write_file(OutJson, json(R)),
    halt(0).

turn(K, N, Single, Coord, Workers) ->
    SC = copy(Single, "scale_copy", "off", N),
    SP = plugin(Single, "scale_plugin", N),
    CC = copy(Coord, "scale_copy", "on", N, Workers),
    CP = plugin(Coord, "scale_plugin", N, Workers),
    {Shard, Both} = direct(Coord, Workers, N),
    io:format("turn ~b: one PostgreSQL: raw COPY ~b rows/s, plugin ~b events/s; Citus: raw COPY "
              "through the coordinator ~b rows/s, plugin ~b events/s, one shard directly ~b rows/s, "
              "a shard on each worker at once ~b rows/s~n", [K, SC, SP, CC, CP, Shard, Both]),
    #{single_copy => SC, single_plugin => SP, citus_copy => CC, citus_plugin => CP,
      shard_copy => Shard, workers_copy => Both}.

median(L) -> lists:nth((length(L) + 1) div 2, lists:sort(L)).

%% ---- servers and tables -------------------------------------------------------

sh(Cmd) -> os:cmd(Cmd).
psql(Dir, Sql) -> string:trim(sh("bash test/pg.sh psql " ++ Dir ++ " -Atq -c \"" ++ Sql ++ "\" 2>&1")).
dsn(Dir) -> string:trim(sh("bash test/pg.sh dsn " ++ Dir)).

%% a fresh table T made by priv/schema.sql; every server checkpointed
fresh(Dir, T, Distribute, Others) ->
    drop(Dir, T),
    sh("PGOPTIONS='-c vmq_pgevents.table=" ++ T ++ " -c vmq_pgevents.distribute=" ++ Distribute ++
       " -c client_min_messages=warning' bash test/pg.sh psql " ++ Dir ++ " -q -f priv/schema.sql"),
    [psql(D, "CHECKPOINT") || D <- [Dir | Others]],
    ok.

drop(Dir, T) -> psql(Dir, "DROP TABLE IF EXISTS " ++ T ++ ", " ++ T ++ "_dead CASCADE").

%% ---- raw COPY -----------------------------------------------------------------

copy(Dir, T, Distribute, N) -> copy(Dir, T, Distribute, N, []).
copy(Dir, T, Distribute, N, Others) ->
    fresh(Dir, T, Distribute, Others),
    R = pg_baseline(dsn(Dir), T, N),
    drop(Dir, T),
    R.

%% (through a coordinator, with the connections per worker the plugin
%% sets for its session: c_src/session.c, w_check_distributed)
pg_baseline(Dsn, T, N) ->
    Out = sh("PGOPTIONS='-c citus.max_adaptive_executor_pool_size=4 -c citus.max_cached_conns_per_worker=4' "
             "BENCH_CLIENTS=" ++ integer_to_list(?CLIENTS) ++ " _build/make/pg_baseline '" ++ Dsn ++ "' '" ++
             T ++ "' copy " ++ integer_to_list(N) ++ " 64 10000"),
    ["copy", _, _, Rate | _] = string:lexemes(Out, " \n"),
    list_to_integer(Rate).

%% One shard of the cluster's table (of today's partition) on the first
%% worker, written directly, N rows; then a shard on each worker at once,
%% N rows each: the rate of both together
direct(Coord, Workers = [W1, W2], N) ->
    T = "scale_shard",
    fresh(Coord, T, "on", Workers),
    Part = psql(Coord, "SELECT name FROM vmq_pgevents_partition_list('" ++ T ++ "') "
                       "WHERE lo <= now() AND now() < hi"),
    Shard = fun(W, K) ->
                    psql(Coord, "SELECT shard_name FROM citus_shards WHERE table_name = '" ++ Part ++
                                "'::regclass AND nodeport = " ++ port(W) ++ " ORDER BY shardid OFFSET " ++
                                integer_to_list(K) ++ " LIMIT 1")
            end,
    One = pg_baseline(dsn(W1), Shard(W1, 1), N),
    Self = self(),
    T0 = erlang:monotonic_time(microsecond),
    [spawn_link(fun() -> Self ! {copied, pg_baseline(dsn(W), Shard(W, 0), N)} end) || W <- [W1, W2]],
    [receive {copied, _} -> ok end || _ <- [W1, W2]],
    T1 = erlang:monotonic_time(microsecond),
    drop(Coord, T),
    {One, round(2 * N / ((T1 - T0) / 1.0e6))}.

port(Dir) ->
    {ok, B} = file:read_file(filename:join(Dir, "port")),
    string:trim(binary_to_list(B)).

%% ---- the plugin ---------------------------------------------------------------

plugin(Dir, T, N) -> plugin(Dir, T, N, []).
plugin(Dir, T, N, Others) ->
    fresh(Dir, T, "auto", Others),
    _ = application:load(vmq_pgevents),
    Spool = Dir ++ "_spool",
    sh("rm -rf '" ++ Spool ++ "'"),
    [application:set_env(vmq_pgevents, K, V) ||
        {K, V} <- [{dsn, dsn(Dir)}, {table, T}, {batch_size, 10000},
                   {queue_max_events, 3000000}, {queue_max_bytes, 4000000000},
                   {spool_max_bytes, 4000000000}, {stop_timeout_ms, 600000},
                   {spool_dir, Spool}]],
    {ok, _} = application:ensure_all_started(vmq_pgevents),
    {ok, _} = vmq_pgevents:flush(60000),
    Self = self(),
    P = binary:copy(<<"x">>, 64),
    PerProc = ?CLIENTS div ?PROCS,
    T0 = erlang:monotonic_time(microsecond),
    Pids = [spawn_link(fun() ->
                               Subs = list_to_tuple([{"", <<"bench-client-", (integer_to_binary(I * PerProc + C))/binary>>}
                                                     || C <- lists:seq(0, PerProc - 1)]),
                               [vmq_pgevents:on_publish(<<"bench">>, element(1 + K rem PerProc, Subs), 1,
                                                        [<<"bench">>, <<"topic">>], P, false)
                                || K <- lists:seq(1, N div ?PROCS)],
                               Self ! {done, self()}
                       end) || I <- lists:seq(0, ?PROCS - 1)],
    [receive {done, Pid} -> ok end || Pid <- Pids],
    {ok, _} = vmq_pgevents:flush(600000),
    T1 = erlang:monotonic_time(microsecond),
    ok = application:stop(vmq_pgevents),
    ok = application:unload(vmq_pgevents),
    Rows = list_to_integer(psql(Dir, "SELECT count(*) FROM " ++ T)),
    Rows =:= (N div ?PROCS) * ?PROCS orelse error({rows, Rows}),
    drop(Dir, T),
    round(Rows / ((T1 - T0) / 1.0e6)).

%% ---- output -------------------------------------------------------------------

report(R) ->
    io:format("~nIngest, ~b rows/events of 64 B payloads from ~b clients, median of ~b turns:~n",
              [maps:get(rows, R), ?CLIENTS, ?TURNS]),
    io:format("  ~-44s ~10s  ~s~n", ["", "rows/s", "ratio"]),
    Line = fun(Name, V, Ratio) -> io:format("  ~-44s ~10b  ~s~n", [Name, V, Ratio]) end,
    F = fun(X) -> io_lib:format("~.2fx", [X]) end,
    Line("one PostgreSQL: raw COPY", maps:get(single_copy, R), ""),
    Line("one PostgreSQL: the plugin", maps:get(single_plugin, R), F(maps:get(single_plugin_vs_copy, R)) ++ " of raw COPY"),
    Line("Citus, through the coordinator: raw COPY", maps:get(citus_copy, R),
         F(maps:get(citus_vs_single_copy, R)) ++ " of one"),
    Line("Citus, through the coordinator: the plugin", maps:get(citus_plugin, R),
         F(maps:get(citus_vs_single_plugin, R)) ++ " of one"),
    io:format("  ~-44s ~10s  ~s~n", ["  (the plugin against raw COPY there)", "",
                                        F(maps:get(citus_plugin_vs_copy, R))]),
    Line("Citus, one shard on a worker, directly", maps:get(shard_copy, R),
         F(maps:get(shard_copy, R) / maps:get(single_copy, R)) ++ " of one"),
    Line("Citus, a shard on each worker at once", maps:get(workers_copy, R),
         F(maps:get(workers_copy, R) / maps:get(single_copy, R)) ++ " of one").

json(M) when is_map(M) ->
    ["{", lists:join(", ", [[json(K), ": ", json(V)] || {K, V} <- lists:sort(maps:to_list(M))]), "}"];
json(L) when is_list(L) -> ["[", lists:join(", ", [json(X) || X <- L]), "]"];
json(A) when is_atom(A) -> ["\"", atom_to_list(A), "\""];
json(I) when is_integer(I) -> integer_to_list(I);
json(F) when is_float(F) -> io_lib:format("~.4f", [F]).
