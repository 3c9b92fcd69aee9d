%% @doc Part of `make bench` (bench/run_bench_readback.sh): reading back
%% what a killed broker left, against writing the same events live,
%% both timed by PostgreSQL itself: the commit timestamps of the first and
%% the last batch of rows (track_commit_timestamp), nothing polling the
%% table meanwhile. Each step runs in a VM of its own:
%%   live:  PostgreSQL up, N on_publish calls, written as they come;
%%   leave: PostgreSQL down, N calls into the journal, then the VM waits
%%          to be killed (kill -9 by the script);
%%   back:  PostgreSQL up, a new VM on the same spool_dir: the journal's
%%          files taken over and written.
-module(vmq_pgevents_readback).

-export([live/3, leave/3, back/2]).

-define(PAYLOAD, 64).

live(PgDir, Table, N) ->
    start(PgDir, Table),
    vmq_pgevents_bench:publish_n(N, ?PAYLOAD),
    {ok, _} = vmq_pgevents:flush(600000),
    ok = application:stop(vmq_pgevents),
    halt(0).

leave(PgDir, Table, N) ->
    start(PgDir, Table),
    vmq_pgevents_bench:publish_n(N, ?PAYLOAD),
    #{queued := Q, inflight := I} = vmq_pgevents:status(),
    io:format("left ~b ~s~n", [Q + I, os:getpid()]),   %% with the writer's batch (its start row too)
    timer:sleep(infinity).

back(PgDir, Table) ->
    start(PgDir, Table),
    {ok, _} = vmq_pgevents:flush(600000),
    #{queued := 0} = vmq_pgevents:status(),
    ok = application:stop(vmq_pgevents),
    halt(0).

start(PgDir, Table) ->
    logger:set_primary_config(level, error),
    _ = application:load(vmq_pgevents),
    Dsn = string:trim(os:cmd("bash test/pg.sh dsn " ++ PgDir)),
    [application:set_env(vmq_pgevents, K, V) ||
        {K, V} <- [{dsn, Dsn}, {table, Table}, {batch_size, 10000},
                   {spool_dir, PgDir ++ "_spool"}, {spool_max_bytes, 4000000000},
                   {backoff_min_ms, 20}, {backoff_max_ms, 200}, {stop_timeout_ms, 100}]],
    {ok, _} = application:ensure_all_started(vmq_pgevents).
